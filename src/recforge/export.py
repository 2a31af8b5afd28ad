"""Export a fitted torch ranker to ONNX, and score encoded rows with onnxruntime.

The graph takes the encoder's arrays (what ``FeatureEncoder.transform`` returns) as named
inputs with a dynamic batch axis and returns the served probability, calibration included::

    categorical      (B, n_cat)   int64      present when the model has categorical fields
    numeric          (B, n_num)   float32    present when it has numeric fields
    multi.<name>     (B, max_len) int64      one per multi-valued field, 0 = padding
    ->  proba        (B,) float32, or (B, T) for a multi-task ranker

so that ``OnnxRanker(path).predict_proba_encoded(model.encoder_.transform(frame))`` equals
``model.predict_proba(frame)`` (to float rounding). ``onnx``/``onnxscript`` are needed to
export and ``onnxruntime`` to score (the ``onnx`` extra: ``pip install recforge[onnx]``).

    >>> path = export_onnx(model, "ranker.onnx")          # also checks it against torch
    >>> OnnxRanker(path).predict_proba_encoded(model.encoder_.transform(frame))
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recforge.data.features import EncodedFeatures
from recforge.exceptions import ConfigError, DataError

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "torchscript", "dynamo")
TOLERANCE = 1e-5  # max |onnxruntime - torch| on probabilities that export_onnx accepts


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"{what} needs the {module!r} package: pip install 'recforge[onnx]' "
            f"(onnx, onnxscript, onnxruntime)."
        ) from e


def input_names(x: EncodedFeatures) -> list[str]:
    """The graph's input names for encoded rows shaped like ``x`` (empty arrays dropped)."""
    names = ["categorical"] if x.categorical.shape[1] else []
    names += ["numeric"] if x.numeric.shape[1] else []
    return names + [f"multi.{k}" for k in x.multi]


def feeds(x: EncodedFeatures) -> dict[str, np.ndarray]:
    """Encoded rows as onnxruntime inputs (int64 codes, float32 numbers)."""
    out: dict[str, np.ndarray] = {}
    if x.categorical.shape[1]:
        out["categorical"] = np.ascontiguousarray(x.categorical, dtype=np.int64)
    if x.numeric.shape[1]:
        out["numeric"] = np.ascontiguousarray(x.numeric, dtype=np.float32)
    for k, v in x.multi.items():
        out[f"multi.{k}"] = np.ascontiguousarray(v, dtype=np.int64)
    return out


def sample_rows(model: Any, n: int = 64, seed: int = 0) -> EncodedFeatures:
    """``n`` random valid encoded rows for ``model``'s encoder (codes within each field's
    vocabulary, numbers ~ N(0, 1)): inputs to trace and check an export without data."""
    rng = np.random.default_rng(seed)
    fields = model.encoder_.fields_
    cat = [f for f in fields if f.type == "categorical"]
    num = [f for f in fields if f.type == "numeric"]
    multi = {
        f.name: rng.integers(0, max(f.vocab_size, 1), (n, f.max_len)).astype(np.int64)
        for f in fields
        if f.type == "multi"
    }
    categorical = np.stack(
        [rng.integers(0, max(f.vocab_size, 1), n) for f in cat], axis=1
    ).astype(np.int64) if cat else np.zeros((n, 0), np.int64)  # fmt: skip
    numeric = rng.normal(size=(n, len(num))).astype(np.float32)
    extra = getattr(model, "export_sample_multi", None)  # inputs beside the encoder's (DSIN)
    if extra is not None:
        multi.update(extra(n, rng))
    return EncodedFeatures(categorical, numeric, multi)


def export_onnx(
    model: Any,
    path: str | Path,
    *,
    rows: EncodedFeatures | None = None,
    opset: int = 18,
    exporter: str = "auto",
) -> Path:
    """Write ``model`` (a fitted ``TorchRanker``) to ``path`` as ONNX and check it.

    rows: encoded rows to trace with and to compare on (default: ``sample_rows``).
    exporter: "torchscript" (``torch.onnx.export(dynamo=False)``: a second or two),
    "dynamo" (``torch.export``-based: slower, traces what TorchScript cannot, e.g. DIEN's
    batch norm over a dynamic shape) or "auto" (the first, else the second). The
    export is rejected (ConfigError) when onnxruntime's probabilities differ from torch's
    by more than ``TOLERANCE`` on those rows. Returns the path.
    """
    from recforge.models.ranking.torch_base import TorchRanker

    if not isinstance(model, TorchRanker):
        raise ConfigError(
            f"ONNX export covers the torch rankers; {type(model).__name__} is not one "
            f"(LightGBM / GBDT+LR models and retrieval models are not exported)."
        )
    model._check_fitted("export_onnx")
    _require("onnx", "ONNX export")
    rows = rows if rows is not None else sample_rows(model)
    if len(rows) < 2:
        raise DataError("export_onnx: give at least 2 rows to trace with (batch axis is dynamic).")
    if exporter not in EXPORTERS:
        raise ConfigError(f"export_onnx: exporter={exporter!r}; choose one of {EXPORTERS}.")
    names = input_names(rows)
    wrapper = _Graph(model, rows).eval()
    args = tuple(torch.from_numpy(v) for v in feeds(rows).values())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "recforge.model": type(model).name,
        "recforge.inputs": json.dumps(names),
        "recforge.tasks": json.dumps(list(getattr(model, "tasks_", []))),
    }
    tried = []
    for kind in ("torchscript", "dynamo") if exporter == "auto" else (exporter,):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                _EXPORT[kind](wrapper, args, names, path, opset, meta)
            break
        except Exception as e:  # an exporter that cannot trace this graph: try the next
            tried.append(f"{kind}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            log.info("ONNX %s exporter failed on %s: %s", kind, type(model).name, tried[-1])
    else:
        raise ConfigError(
            f"ONNX export of {type(model).__name__} failed with every exporter: " + "; ".join(tried)
        )
    # checked on the tracing rows and on a different number of other rows (dynamic batch)
    diff = max(check_onnx(model, path, rows), check_onnx(model, path, sample_rows(model, 203, 1)))
    log.info("exported %s to %s (max |onnx - torch| = %.2e)", type(model).name, path, diff)
    return path


def _torchscript(wrapper, args, names, path: Path, opset: int, meta: dict[str, str]) -> None:
    torch.onnx.export(
        wrapper,
        args,
        str(path),
        input_names=names,
        output_names=["proba"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "proba"]},
        opset_version=opset,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _dynamo(wrapper, args, names, path: Path, opset: int, meta: dict[str, str]) -> None:
    _require("onnxscript", "ONNX export with the dynamo exporter")
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapper,
        args,
        input_names=names,
        output_names=["proba"],
        dynamic_shapes=(tuple({0: batch} for _ in names),),  # forward(*arrays)
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props.update(meta)
    program.save(str(path))


_EXPORT = {"torchscript": _torchscript, "dynamo": _dynamo}


def check_onnx(model: Any, path: str | Path, rows: EncodedFeatures) -> float:
    """Max |onnxruntime - torch| over the probabilities of ``rows``; raises ConfigError
    above ``TOLERANCE``."""
    want = model.predict_proba_encoded(rows)
    got = OnnxRanker(path).predict_proba_encoded(rows)
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise ConfigError(
            f"ONNX export of {type(model).__name__} to {path}: onnxruntime differs from torch "
            f"by {diff:.3g} (> {TOLERANCE}); the graph uses an operator onnxruntime computes "
            f"differently. Serve this model with torch."
        )
    return diff


class OnnxRanker:
    """Scores encoded rows with onnxruntime: ``predict_proba_encoded(x)`` as the torch
    ranker's. ``num_threads``: onnxruntime's intra-op threads (None: its default)."""

    def __init__(self, path: str | Path, *, num_threads: int | None = None) -> None:
        ort = _require("onnxruntime", "ONNX scoring")
        opts = ort.SessionOptions()
        if num_threads is not None:
            opts.intra_op_num_threads = int(num_threads)
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX file {self.path} not found.")
        self.session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    def predict_proba_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """Probabilities (n,), or (n, T) for a multi-task export."""
        given = feeds(x)
        missing = [n for n in self.inputs if n not in given]
        if missing:
            raise DataError(
                f"{self.path}: the rows lack the graph's inputs {missing} (have {list(given)}); "
                f"encode them with the exported model's encoder."
            )
        return self.session.run(["proba"], {n: given[n] for n in self.inputs})[0]


class _Graph(torch.nn.Module):
    """Positional encoder arrays -> the ranker's probability, calibration included."""

    def __init__(self, model: Any, rows: EncodedFeatures) -> None:
        super().__init__()
        self.module = model.module_
        self.has_cat = bool(rows.categorical.shape[1])
        self.has_num = bool(rows.numeric.shape[1])
        self.multi = list(rows.multi)
        self.n_num = rows.numeric.shape[1]
        self.log_rate = float(np.log(model.neg_rate_))

    def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
        it = iter(arrays)
        first = arrays[0]
        n = first.shape[0]
        cat = next(it) if self.has_cat else torch.zeros((n, 0), dtype=torch.int64)
        num = next(it) if self.has_num else torch.zeros((n, 0), dtype=torch.float32)
        multi = {k: next(it) for k in self.multi}
        z = self.module({"categorical": cat, "numeric": num, "multi": multi})
        if z.dim() == 2 and z.shape[1] == 1:
            z = z[:, 0]
        return torch.sigmoid(z + self.log_rate)
