"""EASE^R (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

A linear item-item model ``scores = X B`` with a zero diagonal, in closed form:

    P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P)),   i.e. B_ij = -P_ij / P_jj, B_jj = 0.

B is dense (n_items, n_items): fit needs about ``3 * 8 * n_items^2`` bytes (Gram matrix,
its inverse and B in float64) and the model keeps ``4 * n_items^2`` bytes. Above
``max_items`` items fit refuses with an error rather than exhausting memory.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from recforge.artifacts import pack_sparse, unpack_sparse
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import RetrievalModel
from recforge.models.registry import register
from recforge.threads import resolve_threads
from recforge.topk import topk

log = logging.getLogger(__name__)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE^R weights from a Gram matrix.

    gram: (I, I) ``X^T X`` (float64, symmetric). Returns B (I, I) float64 with zero diagonal.
    """
    g = np.array(gram, dtype=np.float64, copy=True)
    g[np.diag_indices_from(g)] += l2
    p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)  # (I, I)
    b = -p / np.diag(p)[None, :]  # column j divided by P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b


@register("ease")
class EASE(RetrievalModel):
    """EASE^R: scores = seen @ B with the closed-form item-item matrix B.

    Parameters
    ----------
    l2: the L2 penalty lambda (Steck uses 200-1000 on MovieLens/Netflix-size data).
    weight_col: interaction column used as X's values (None: binary 0/1).
    max_items: refuse to fit above this many items (B is dense, n_items^2 floats).
    num_threads: BLAS threads for the inverse (None: the ``recforge.threads`` default).
    """

    supports_history = True

    smoke_params: ClassVar[dict[str, Any]] = {"l2": 10.0}

    def __init__(
        self,
        *,
        l2: float = 500.0,
        weight_col: str | None = None,
        max_items: int = 30_000,
        num_threads: int | None = None,
    ) -> None:
        self.l2 = l2
        self.weight_col = weight_col
        self.max_items = max_items
        self.num_threads = num_threads

    def _fit(self, interactions: Interactions) -> None:
        if self.l2 <= 0:
            raise ConfigError(
                f"ease: l2 must be positive (the Gram matrix may be singular), got {self.l2!r}."
            )
        if self.n_items > self.max_items:
            gb = 3 * 8 * self.n_items**2 / 1e9
            raise DataError(
                f"ease: {self.n_items} items exceed max_items={self.max_items}; the dense item-item "
                f"matrix would need about {gb:.1f} GB to fit. Filter rare items first, raise "
                f"max_items if memory allows, or use itemcf/als for this catalogue."
            )
        x = self.seen_
        if self.weight_col is not None:
            x = interactions.to_csr(self.user_vocab_, self.item_vocab_, value=self.weight_col)
        x = x.astype(np.float64)
        gram = (x.T @ x).toarray()  # (I, I)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(resolve_threads(self.num_threads), "blas"):
            self.weights_ = ease_weights(gram, float(self.l2)).astype(np.float32)  # (I, I)
        # X itself when it differs from the 0/1 seen matrix
        self.input_ = x.astype(np.float32).tocsr() if self.weight_col is not None else None
        log.info("ease: %d items, l2=%s", self.n_items, self.l2)

    def _input(self) -> Any:
        """X: (n_users, n_items) the matrix B was fitted on."""
        return self.seen_ if self.input_ is None else self.input_

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """(B, n_items) float32 scores ``X[user_idx] @ B``."""
        return np.asarray(self._input()[np.asarray(user_idx)] @ self.weights_, dtype=np.float32)

    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        """(n_items,) float32: the sum of the rows of B of the distinct history items."""
        rows = self.weights_[np.unique(np.asarray(item_idx, dtype=np.int64))]
        return rows.sum(axis=0, dtype=np.float32)

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items that item i predicts most strongly: the top of row ``B[i]``."""
        rows = np.array(self.weights_[np.asarray(item_idx)], dtype=np.float32, copy=True)
        rows[np.arange(len(item_idx)), item_idx] = -np.inf
        return topk(rows, k)

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        arrays["weights"] = self.weights_
        if self.input_ is not None:
            arrays.update(pack_sparse("x", self._input()))
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.weights_ = arrays["weights"]
        self.input_ = None
        if self.weight_col is not None:
            self.input_ = unpack_sparse("x", arrays)
