"""The one API every model follows.

* ``__init__`` takes keyword-only hyperparameters and stores them, nothing else.
* ``fit`` returns ``self``; learned state ends in ``_``.
* A method that needs learned state raises ``NotFittedError`` before ``fit``.
* ``save(path)`` writes a model directory (see ``recforge.artifacts``);
  ``Model.load(path)`` / ``recforge.models.load(path)`` read it back.

Two kinds:

* ``RetrievalModel``: ``fit(interactions)``, ``recommend(user_ids, k)`` and
  ``similar_items(item_ids, k)``, each returning ``(ids, scores)`` arrays shaped (n, k) in
  raw ids. Subclasses implement ``_fit`` and ``score_users`` (dense scores for a batch of
  internal user indices); full-ranking evaluation and ``recommend`` batch over it.
* ``Ranker``: ``fit(frame, label=..., valid=None)`` and ``predict_proba(frame)``.

Subclasses persist their learned state through ``_save_state`` / ``_load_state``: a dict
of NumPy arrays (safetensors) and a JSON-safe dict.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.artifacts import (
    MANIFEST,
    STATE,
    WEIGHTS,
    pack_sparse,
    read_artifact,
    unpack_sparse,
    write_artifact,
)
from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab
from recforge.exceptions import ArtifactError, ConfigError, DataError, NotFittedError
from recforge.topk import rows_per_batch, topk


class BaseModel:
    """Parameters, fitted-state checks and save/load shared by every model."""

    name: ClassVar[str] = ""  # registry name, set by @register
    kind: ClassVar[str] = ""  # "retrieval" or "ranker"
    _fitted_attr: ClassVar[str] = "n_features_"  # an attribute that exists only after fit
    # Tiny, fast hyperparameters for smoke and contract tests (few epochs, small dims).
    smoke_params: ClassVar[dict[str, Any]] = {}

    # ------------------------------------------------------------------ parameters
    @classmethod
    def param_names(cls) -> list[str]:
        """The ``__init__`` keyword names; where an ``__init__`` takes ``**shared`` and hands
        them to its base (``TorchRanker``, ``TorchRetrievalModel``), the base's names follow."""
        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            sig = inspect.signature(vars(klass)["__init__"])
            for p in sig.parameters.values():
                named = p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                if named and p.name != "self" and p.name not in names:
                    names.append(p.name)
            if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                break
        return names

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__``."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> BaseModel:
        from recforge.models.params import check_params

        check_params(type(self), params)
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def check_params(self) -> None:
        """Check every hyperparameter's type against the ``__init__`` annotations (what
        ``models.get`` checks; ``fit`` calls this for models built directly)."""
        from recforge.models.params import check_params

        check_params(type(self), self.get_params())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------ fitted state
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, self._fitted_attr)

    def _check_fitted(self, method: str = "this method") -> None:
        if not self.is_fitted:
            raise NotFittedError(self, method)

    # ------------------------------------------------------------------ persistence
    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Learned state as (arrays, json). Subclasses extend."""
        return {}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Restore what ``_save_state`` returned. Subclasses extend."""

    def _schema(self) -> dict[str, Any]:
        """Description of the data the model expects (goes into the manifest)."""
        return {}

    def save(self, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write this fitted model to directory ``path``; returns the path."""
        self._check_fitted("save")
        arrays, state = self._save_state()
        return write_artifact(
            path,
            name=self.name or type(self).__name__,
            kind=self.kind,
            params=_jsonable_params(self.get_params()),
            arrays=arrays,
            state=state,
            schema=self._schema(),
            metrics=metrics or getattr(self, "metrics_", None),
        )

    @classmethod
    def load(cls, path: str | Path) -> BaseModel:
        """Read a model directory written by ``save``.

        Everything that can go wrong with the directory is an ``ArtifactError`` naming the
        file: a failed check (``recforge.artifacts.verify_artifact``), params in
        ``manifest.json`` that the class refuses, or weights/state that do not fit the
        params (a missing or misshapen tensor, a corrupt state entry).
        """
        path = Path(path)
        art = read_artifact(path)
        if cls.name and art.manifest["name"] != cls.name:
            raise ArtifactError(
                f"{path}: holds a {art.manifest['name']!r} model, not {cls.name!r}; "
                f"use recforge.models.load(path) to load whatever it holds."
            )
        try:
            model = cls(**art.manifest.get("params", {}))
        except (TypeError, ValueError) as e:
            raise ArtifactError(
                f"{path / MANIFEST}: params do not fit {cls.__name__}: {e}"
            ) from None
        try:
            model._load_state(art.arrays, art.state)
            model._check_loaded()
        except ArtifactError as e:  # from a helper such as unpack_sparse: add the file
            raise ArtifactError(f"{path / WEIGHTS}: {e}") from None
        except KeyError as e:
            raise ArtifactError(
                f"{path}: entry {e} is missing from {WEIGHTS} or {STATE}; the directory is "
                f"incomplete or was written by different code."
            ) from None
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise ArtifactError(
                f"{path}: {WEIGHTS} / {STATE} do not fit the {cls.__name__} described by "
                f"{MANIFEST} ({type(e).__name__}: {e})."
            ) from None
        model.metrics_ = art.manifest.get("metrics", {})
        return model

    def _check_loaded(self) -> None:
        """After ``_load_state``: raise (ValueError) if the restored state is inconsistent.
        Subclasses extend; ``RetrievalModel`` scores one user and checks the shape."""


def _writable_scores(scores: Any) -> np.ndarray:
    """``score_users``' block as float32 that may be masked in place: itself when it is a
    fresh writable array (the common case: no second copy of a batch x n_items block), else
    a copy."""
    if (
        isinstance(scores, np.ndarray)
        and scores.dtype == np.float32
        and scores.base is None
        and scores.flags.writeable
        and scores.flags.c_contiguous
    ):
        return scores
    return np.array(scores, dtype=np.float32, copy=True)


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


class RetrievalModel(BaseModel):
    """Scores every item for a user; recommends the top k.

    Subclasses implement ``_fit(interactions)`` (vocabularies and the seen matrix are already
    set) and ``score_users(user_idx)``. Override ``similar_items_idx`` when the model has a
    notion of item similarity (embedding models get it from ``EmbeddingMixin``).
    """

    kind = "retrieval"
    _fitted_attr = "item_vocab_"

    # set by fit
    user_vocab_: IdVocab
    item_vocab_: IdVocab
    seen_: sp.csr_matrix  # (n_users, n_items) training interactions, 1 where seen

    def fit(self, interactions: Interactions) -> RetrievalModel:
        """Learn from an interaction log; returns self."""
        if not isinstance(interactions, Interactions):
            raise DataError(
                f"{type(self).__name__}.fit expects an Interactions, got {type(interactions).__name__}; "
                f"wrap a DataFrame with Interactions.from_frame(df, user_col=..., item_col=...)."
            )
        if len(interactions) == 0:
            raise DataError(f"{type(self).__name__}.fit: the interaction log is empty.")
        self.check_params()
        user_vocab, item_vocab = interactions.vocabs()
        self.seen_ = interactions.to_csr(user_vocab, item_vocab)
        self.user_vocab_, self.item_vocab_ = user_vocab, item_vocab
        try:
            self._fit(interactions)
        except BaseException:
            del self.item_vocab_  # a failed fit leaves the model unfitted
            raise
        return self

    def _fit(self, interactions: Interactions) -> None:
        raise NotImplementedError

    @property
    def n_users(self) -> int:
        return len(self.user_vocab_)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab_)

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for internal user indices: (len(user_idx), n_items) float32.

        Return a new array (callers mask it in place) or a read-only view (e.g.
        ``np.broadcast_to``), which callers copy; never a writable array the model keeps."""
        raise NotImplementedError

    def _check_loaded(self) -> None:
        """The restored state fits together: ``seen`` is (n_users, n_items) and scoring the
        last user gives one score per item (catches factors or tensors of another size)."""
        super()._check_loaded()
        if self.seen_.shape != (self.n_users, self.n_items):
            raise ValueError(
                f"seen matrix is {self.seen_.shape}, vocabularies say "
                f"({self.n_users}, {self.n_items})"
            )
        if self.n_users:
            scores = np.asarray(self.score_users(np.array([self.n_users - 1])))
            if scores.shape != (1, self.n_items):
                raise ValueError(
                    f"scoring one user gave shape {scores.shape}, expected (1, {self.n_items})"
                )

    # ------------------------------------------------------------------ recommend
    def recommend(
        self,
        user_ids: Any,
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 1024,
        unknown: str = "raise",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each user, best first.

        Returns (item_ids (n_users, k) raw ids, scores (n_users, k) float32). ``k`` is capped
        at the number of items. When a user has fewer than k unseen items, the tail slots
        hold seen items with score -inf. Unknown user ids raise ``UnknownIdError``, or, with
        ``unknown="popular"``, get the items with the most training interactions (scores
        are those counts).
        """
        self._check_fitted("recommend")
        _check_k(k)
        if unknown not in ("raise", "popular"):
            raise ConfigError(f"unknown={unknown!r}; choose 'raise' or 'popular'.")
        user_ids = _as_list(user_ids)
        user_idx = self.user_vocab_.index(
            user_ids, unknown="mask" if unknown == "popular" else "raise"
        )
        known = user_idx >= 0
        idx, scores = self.recommend_idx(
            user_idx[known], k=k, exclude_seen=exclude_seen, batch_size=batch_size
        )
        if not known.all():
            pop_idx, pop_scores = self.popular_idx(min(k, self.n_items))
            full_idx = np.empty((len(user_idx), pop_idx.shape[0]), dtype=np.int64)
            full_val = np.empty((len(user_idx), pop_idx.shape[0]), dtype=np.float32)
            full_idx[known], full_val[known] = idx, scores
            full_idx[~known], full_val[~known] = pop_idx, pop_scores
            idx, scores = full_idx, full_val
        return self.item_vocab_.ids(idx), scores

    def popular_idx(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k items with the most training interactions: (idx (k,), counts (k,) float32)."""
        counts = np.asarray(self.seen_.sum(axis=0), dtype=np.float32).ravel()
        idx, vals = topk(counts[None, :], min(k, self.n_items))
        return idx[0], vals[0]

    def recommend_idx(
        self, user_idx: np.ndarray, k: int = 10, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommend`` in internal indices. ``batch_size`` users are scored at a time, fewer
        when their dense scores would pass ``recforge.topk.SCORE_MEMORY_BUDGET``."""
        _check_k(k)
        user_idx = np.asarray(user_idx, dtype=np.int64)
        k = min(k, self.n_items)
        batch_size = rows_per_batch(self.n_items, batch_size)
        out_idx = np.empty((len(user_idx), k), dtype=np.int64)
        out_val = np.empty((len(user_idx), k), dtype=np.float32)
        for start in range(0, len(user_idx), batch_size):
            batch = user_idx[start : start + batch_size]
            scores = _writable_scores(self.score_users(batch))
            if exclude_seen:
                mask_seen(scores, self.seen_, batch)
            i, v = topk(scores, k)
            out_idx[start : start + len(batch)] = i
            out_val[start : start + len(batch)] = v
        return out_idx, out_val

    # ------------------------------------------------------------------ request-time history
    # Models that can score from a history given at request time (not only the training
    # matrix) set ``supports_history = True`` and implement ``score_history``.
    supports_history: ClassVar[bool] = False
    # True when a training user's own history, given at request time, scores exactly as
    # ``recommend`` does for that user (False: a history-only user vector, close but not equal)
    history_is_exact: ClassVar[bool] = True

    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for one user given as internal item indices, oldest first
        (unknown items already dropped; may be empty): (n_items,) float32."""
        raise NotImplementedError(f"{type(self).__name__} cannot score a request-time history.")

    def recommend_from_history(
        self, item_ids: Any, k: int = 10, exclude: Any = None, exclude_history: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a user given as raw item ids (oldest first), e.g. what the user did
        in this session, whether or not the user was in the training data.

        Unknown item ids are ignored. Items in the history (``exclude_history``) and in
        ``exclude`` (raw ids) are left out. Returns (item_ids (k',), scores (k',) float32),
        k' = min(k, n_items); slots with nothing left to recommend have score -inf.
        """
        self._check_fitted("recommend_from_history")
        _check_k(k)
        hist = self.item_vocab_.index(_as_list(item_ids), unknown="mask")
        hist = hist[hist >= 0]
        excl = (
            self.item_vocab_.index(_as_list(exclude), unknown="mask")
            if exclude is not None
            else None
        )
        idx, scores = self.recommend_from_history_idx(
            hist, k, exclude_idx=excl, exclude_history=exclude_history
        )
        return self.item_vocab_.ids(idx), scores

    def recommend_from_history_idx(
        self,
        hist_idx: np.ndarray,
        k: int,
        exclude_idx: np.ndarray | None = None,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommend_from_history`` in internal indices: (idx (k',), scores (k',))."""
        if not self.supports_history:
            raise NotImplementedError(
                f"{type(self).__name__} cannot score a request-time history; use recommend() "
                f"for users seen in training."
            )
        hist_idx = np.asarray(hist_idx, dtype=np.int64)
        scores = np.array(self.score_history(hist_idx), dtype=np.float32, copy=True).ravel()
        if exclude_history and len(hist_idx):
            scores[hist_idx] = -np.inf
        if exclude_idx is not None:
            exclude_idx = np.asarray(exclude_idx, dtype=np.int64)
            scores[exclude_idx[exclude_idx >= 0]] = -np.inf
        idx, vals = topk(scores[None, :], min(k, self.n_items))
        return idx[0], vals[0]

    def similar_items(self, item_ids: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k items most similar to each item (the item itself excluded)."""
        self._check_fitted("similar_items")
        _check_k(k)
        item_idx = self.item_vocab_.index(_as_list(item_ids))
        idx, scores = self.similar_items_idx(item_idx, k=min(k, self.n_items - 1))
        return self.item_vocab_.ids(idx), scores

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} has no item similarity.")

    # ------------------------------------------------------------------ persistence
    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = pack_sparse("seen", self.seen_)
        state = {"user_vocab": self.user_vocab_.to_json(), "item_vocab": self.item_vocab_.to_json()}
        return arrays, state

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        self.seen_ = unpack_sparse("seen", arrays)
        self.user_vocab_ = IdVocab.from_json(state["user_vocab"])
        self.item_vocab_ = IdVocab.from_json(state["item_vocab"])

    def _schema(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "n_items": self.n_items}


class EmbeddingMixin:
    """For retrieval models with ``user_factors_`` (n_users, d) and ``item_factors_``
    (n_items, d): dot-product scores, cosine item similarity, vectors for an ANN index.

    Subclasses save/load the two factor matrices themselves or rely on this mixin's
    ``_save_state``/``_load_state`` (listed first in the bases).
    """

    user_factors_: np.ndarray
    item_factors_: np.ndarray

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[np.asarray(user_idx)] @ self.item_factors_.T

    def user_vectors(self, user_idx: np.ndarray | None = None) -> np.ndarray:
        """Query vectors (n, d) such that score = user_vector · item_vector."""
        return self.user_factors_ if user_idx is None else self.user_factors_[np.asarray(user_idx)]

    def item_vectors(self) -> np.ndarray:
        """Item vectors (n_items, d) for an inner-product index."""
        return self.item_factors_

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        v = self.item_factors_
        norms = np.linalg.norm(v, axis=1)
        norms[norms == 0] = 1.0
        q = v[np.asarray(item_idx)] / norms[np.asarray(item_idx), None]
        sims = (q @ v.T) / norms[None, :]
        sims[np.arange(len(item_idx)), item_idx] = -np.inf
        return topk(sims, k)

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()  # type: ignore[misc]
        arrays["user_factors"] = np.asarray(self.user_factors_, dtype=np.float32)
        arrays["item_factors"] = np.asarray(self.item_factors_, dtype=np.float32)
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)  # type: ignore[misc]
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]


class Ranker(BaseModel):
    """Predicts a click probability for each row of a feature frame.

    Subclasses implement ``fit(frame, label="label", valid=None)`` and
    ``predict_proba(frame)``; ``recforge.data.features.FeatureEncoder`` turns a frame's
    categorical, numeric and multi-valued columns into arrays.
    """

    kind = "ranker"
    _fitted_attr = "encoder_"

    def fit(
        self, frame: pd.DataFrame, label: str = "label", valid: pd.DataFrame | None = None
    ) -> Ranker:
        raise NotImplementedError

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Click probability per row: (n,) float in [0, 1]."""
        raise NotImplementedError

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(frame)

    def predict_proba_encoded(self, x: Any) -> np.ndarray:
        """``predict_proba`` of rows already encoded by ``encoder_`` (an ``EncodedFeatures``):
        the serving path, which joins pre-encoded feature tables without pandas. Rankers
        that do not implement it are served through ``predict_proba``."""
        raise NotImplementedError(f"{type(self).__name__} has no predict_proba_encoded.")


def seen_row(seen: sp.csr_matrix, u: int) -> np.ndarray:
    """Item indices user ``u`` has seen (a view into the CSR; no sparse indexing)."""
    return seen.indices[seen.indptr[u] : seen.indptr[u + 1]]


def mask_seen(scores: np.ndarray, seen: sp.csr_matrix, user_idx: np.ndarray) -> None:
    """Set scores of items each user has seen to -inf, in place. scores: (B, n_items)."""
    user_idx = np.asarray(user_idx)
    if len(user_idx) == 1:  # the online path: one user, no sparse row indexing
        scores[0, seen_row(seen, int(user_idx[0]))] = -np.inf
        return
    sub = seen[user_idx]
    rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    scores[rows, sub.indices] = -np.inf


def _as_list(ids: Any) -> list:
    if isinstance(ids, str | bytes) or np.isscalar(ids):
        return [ids]
    return list(ids)


def _check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}.")
