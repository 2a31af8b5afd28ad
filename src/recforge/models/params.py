"""A model's hyperparameters, described and checked in one place.

``param_specs(cls)`` lists every keyword a model takes (its own, then the shared ones of
``TorchRanker`` / ``TorchRetrievalModel``) with the type from the ``__init__``
annotation, the default (a model's ``train_defaults`` win over the shared signature's) and
a one-line description from the docstrings (``name: text`` lines, or ````name`` (text)``
phrases; the training ones fall back to ``TrainConfig``'s field comments).

``check_params(cls, params, where)`` is the one validation of parameter names and types,
used by ``models.get`` (Python), the YAML job's ``model.params`` and the CLI alike: an
unknown name or a value of the wrong type (``k="ten"``, ``factors="64"``) is a
``ConfigError`` naming the field, the expected type and the closest valid name.
``annotation_matches`` / ``type_name`` are the type check and its wording, shared with the
job file's typed sections.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recforge.config import suggest
from recforge.exceptions import ConfigError


@dataclass
class ParamSpec:
    """One hyperparameter of a model."""

    name: str
    annotation: Any  # the resolved type hint (Any when none)
    default: Any  # inspect.Parameter.empty when required
    description: str  # one line, "" when no docstring says it

    @property
    def type_text(self) -> str:
        return type_label(self.annotation)


# ---------------------------------------------------------------------------- specs
def _inits(cls: type) -> list[type]:
    """Classes whose ``__init__`` contributes keywords: the class, then (while an
    ``__init__`` takes ``**shared``) its bases up the MRO."""
    out = []
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        out.append(klass)
        sig = inspect.signature(vars(klass)["__init__"])
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return out


def _hints(klass: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(vars(klass)["__init__"])
    except Exception:  # noqa: BLE001 - an unresolvable annotation: no type for that class
        return {}


def param_specs(cls: type) -> list[ParamSpec]:
    """Every hyperparameter of model class ``cls``, in ``param_names()`` order."""
    docs = _doc_lines(cls)
    overrides = dict(getattr(cls, "train_defaults", {}) or {})
    specs: dict[str, ParamSpec] = {}
    for klass in _inits(cls):
        hints = _hints(klass)
        for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
            if p.name == "self" or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                continue
            if p.name in specs:
                continue
            default = overrides.get(p.name, p.default)
            specs[p.name] = ParamSpec(p.name, hints.get(p.name, Any), default, docs.get(p.name, ""))
    return list(specs.values())


_NAMES = re.compile(r"^\s*((?:[a-z_][a-z0-9_]*)(?:\s*[,/]\s*[a-z_][a-z0-9_]*)*)\s*:\s+(\S.*)$")
_INLINE = re.compile(r"``([a-z_][a-z0-9_]*)``\s*\(([^)]*)\)")


def _doc_lines(cls: type) -> dict[str, str]:
    """name -> first sentence of its description, from the docstrings of ``cls`` and the
    classes it inherits parameters from, then ``TrainConfig``'s comments. A description
    that only points elsewhere ("see ``TrainConfig``") gives way to a real one."""
    out: dict[str, str] = {}
    sources = [_parse_doc(k.__doc__ or "") for k in _inits(cls)] + [_train_config_comments()]
    for found in sources:
        for name, text in found.items():
            if name not in out or (_WEAK.search(out[name]) and not _WEAK.search(text)):
                out[name] = text
    return out


_WEAK = re.compile(r"\bsee ``")


def _parse_doc(doc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    i = 0
    while i < len(lines):
        m = _NAMES.match(lines[i])
        if m:
            text = m.group(2).strip()
            indent = len(lines[i]) - len(lines[i].lstrip())
            j = i + 1
            while (
                j < len(lines)
                and lines[j].strip()
                and (len(lines[j]) - len(lines[j].lstrip()) > indent)
            ):
                text += " " + lines[j].strip()
                j += 1
            for name in re.split(r"\s*[,/]\s*", m.group(1)):
                out.setdefault(name, _first_sentence(text))
            i = j
            continue
        i += 1
    for name, text in _INLINE.findall(" ".join(lines)):
        out.setdefault(name, _first_sentence(text))
    return out


def _first_sentence(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    m = re.search(r"\.(\s+[A-Z]|$)", text)
    text = text[: m.start()] if m else text
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + " ..."


def _train_config_comments() -> dict[str, str]:
    from recforge.train import config as train_config

    out = {}
    for line in inspect.getsource(train_config.TrainConfig).splitlines():
        m = re.match(r"\s+(\w+):[^#]*#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


# ---------------------------------------------------------------------------- checks
def check_params(cls: type, params: Mapping[str, Any], where: str | None = None) -> None:
    """Raise ConfigError for a parameter ``cls`` does not take or a value whose type does
    not fit the ``__init__`` annotation. ``where`` prefixes the field in the message
    (``"model.params"`` for a job file; default ``"<model name>"``)."""
    specs = {s.name: s for s in param_specs(cls)}
    name = getattr(cls, "name", "") or cls.__name__
    for key, value in params.items():
        if key not in specs:
            valid = list(specs)
            what = (
                f"{where}: {name!r} has no parameter {key!r}"
                if where
                else f"model {name!r}: unknown parameter {key!r}"
            )
            raise ConfigError(f"{what}{suggest(str(key), valid)}. Valid: {', '.join(valid)}.")
        hint = specs[key].annotation
        if hint is type(None) or annotation_matches(value, hint):
            continue
        field = f"{where}.{key}: {name!r}" if where else f"model {name!r}: {key}"
        raise ConfigError(
            f"{field} expects {type_name(hint)}, got {type(value).__name__} {value!r}."
        )


def annotation_matches(value: Any, hint: Any) -> bool:
    """Whether a value fits a type annotation (ints are accepted as floats, lists as
    tuples; an annotation this check does not understand accepts anything)."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return any(annotation_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool | np.bool_)
    if hint is int:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )
    if hint is str:
        return isinstance(value, str)
    base = origin or hint
    if base in (dict, Mapping) or (isinstance(base, type) and issubclass(base, Mapping)):
        if not isinstance(value, Mapping):
            return False
        if len(args) == 2:
            return all(
                annotation_matches(k, args[0]) and annotation_matches(v, args[1])
                for k, v in value.items()
            )
        return True
    if base in (list, tuple, Sequence) or (
        isinstance(base, type) and issubclass(base, Sequence) and base is not str
    ):
        if not isinstance(value, list | tuple | np.ndarray):
            return False
        if base is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(annotation_matches, value, args))
        elem = args[0] if args else Any
        return all(annotation_matches(v, elem) for v in value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """An annotation in words: "an integer", "a list of integers", "a string or null"."""
    if dataclasses.is_dataclass(hint):
        keys = ", ".join(f.name for f in dataclasses.fields(hint))
        return f"a mapping with keys among {keys}"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    if hint in names:
        return names[hint]
    if hint is type(None) or hint is None:
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence) and args:
        inner = type_name(args[0]).removeprefix("an ").removeprefix("a ")
        return f"a list of {inner}{'s' if not inner.endswith('s') else ''}"
    if origin in (dict, Mapping):
        return "a mapping"
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def type_label(hint: Any) -> str:
    """A short type label for help text: ``int``, ``float | None``, ``list[int]``."""
    if hint is Any:
        return "any"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return (
        str(hint).replace("typing.", "").replace("collections.abc.", "").replace("NoneType", "None")
    )


# ---------------------------------------------------------------------------- guidance
# When to reach for each model, in a line (what `recforge models NAME` prints). A model
# missing here shows the first sentence of its docstring.
WHEN_TO_USE: dict[str, str] = {
    "most_popular": "The baseline every model must beat, and the fallback for cold users.",
    "itemcf": "A strong, fast, explainable first recall channel; supports request-time histories.",
    "usercf": "Small catalogues with many items per user; costly with many users.",
    "ease": "Best-in-class accuracy on up to ~50k items (closed form, dense item-item matrix).",
    "als": "Implicit feedback at scale: fast, embeddings for Faiss; tune factors/alpha.",
    "bpr": "Pairwise-ranking MF when ALS's confidence weighting does not fit the data.",
    "item2vec": "Sequence/session co-occurrence signal; item-item similarity for 'more like this'.",
    "deepwalk": "Graph neighbourhood embeddings when co-occurrence is sparse.",
    "node2vec": "Like DeepWalk, with walks biased towards local (BFS) or global (DFS) structure.",
    "content": "Cold-start items: text/tag similarity needs no interactions.",
    "text_encoder": "Cold-start items from their text, with a tokenizer and encoder trained here to match a user's history to the next item.",
    "lightgcn": "Graph CF that usually beats MF on dense-enough logs; slower to train.",
    "simplex": "A strong contrastive CF baseline; cheap per epoch.",
    "dssm": "Two towers with user and item features; embeds new users from history and features.",
    "youtube_dnn": "Large catalogues with watch histories; sampled softmax over items.",
    "fm_recall": "Recall from user and item features with a dot-product (Faiss-servable) score.",
    "lr": "The ranking baseline: fast, calibrated, interpretable weights.",
    "fm": "Pairwise feature interactions on sparse categorical data.",
    "ffm": "FM with per-field embeddings; strong on few fields, heavy on many.",
    "deepfm": "A good default deep ranker: FM plus an MLP over shared embeddings.",
    "wide_deep": "Memorise hand-picked crosses (wide) and generalise (deep).",
    "dcn": "Explicit bounded-degree feature crosses next to an MLP.",
    "dcnv2": "DCN with richer (low-rank, mixture) crosses; a strong default at scale.",
    "xdeepfm": "Vector-wise explicit interactions (CIN); accurate but slower.",
    "autoint": "Self-attention over fields; learns which interactions matter.",
    "afm": "FM with attention weights on pairs: interpretable interactions.",
    "nfm": "Bi-interaction pooling then an MLP: FM's pairs with non-linearity.",
    "fnn": "An MLP initialised from FM embeddings; quick to converge.",
    "ipnn": "Product-based network (inner products) for sparse categorical data.",
    "opnn": "Product-based network (outer products); more capacity than IPNN.",
    "mmoe": "Several labels at once (click, like, buy) with shared experts.",
    "ple": "Several labels that pull apart (click vs conversion): own and shared experts.",
    "esmm": "Click then conversion: CVR trained on all impressions, no selection bias.",
    "lightgbm": "Tabular features with numeric signal; fast, strong, no tuning of embeddings.",
    "lambdamart": "Re-rank each user's recall candidates: trees trained on NDCG of whole lists.",
    "gbdt_lr": "Tree-learned feature crosses fed to a logistic regression (the Facebook recipe).",
}


def when_to_use(cls: type) -> str:
    """One line on when ``cls`` is the right model."""
    name = getattr(cls, "name", "")
    if name in WHEN_TO_USE:
        return WHEN_TO_USE[name]
    return _first_sentence(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0])
