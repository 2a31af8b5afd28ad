"""EASE^R (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

A linear item-item model ``scores = X B`` with a zero diagonal, in closed form:

    P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P)),   i.e. B_ij = -P_ij / P_jj, B_jj = 0.

The fit works in float32 in one dense (n_items, n_items) buffer: the Gram matrix ``X^T X`` is
written into it a block of columns at a time (sparse products, so no sparse Gram is ever
held whole), lambda is added to its diagonal, a blocked in-place Cholesky factorisation and
inverse (``spd_inverse_inplace``) overwrite it with P, and B is made from P in place. Peak
memory is about ``4 * n_items^2`` bytes (6.4 GB at 40,000 items) plus X; the model keeps
that same buffer as B. Before allocating, fit compares this estimate with the memory
available and refuses with an error that says how much it needs. Measured on Amazon Beauty
(12,092 items, ``benchmarks.ease_memory``): the fit adds 805 MiB to the process's peak
RSS, against 4,524 MiB for the float64 fit this replaced.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recforge.artifacts import pack_sparse, unpack_sparse
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import RetrievalModel
from recforge.models.registry import register
from recforge.threads import resolve_threads
from recforge.topk import topk

log = logging.getLogger(__name__)

_BLOCK = 2048  # columns per step of the Gram product and of the in-place symmetrisation


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` of /proc/meminfo),
    or None where the OS does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fit_bytes(n_items: int, nnz: int) -> int:
    """Estimated peak bytes of an EASE fit: the float32 (I, I) buffer, up to three
    (_BLOCK, I) float32 temporaries of the blocked inverse, and X, X^T (nnz values and
    indices each)."""
    return 4 * n_items * n_items + 3 * 4 * n_items * _BLOCK + 24 * nnz


def gram_into(x: sp.csr_matrix, out: np.ndarray) -> np.ndarray:
    """Write ``X^T X`` (I, I) into ``out`` (float, C-order) a block of columns at a time.

    x: (U, I) sparse. Each block is one sparse product ``X^T X[:, a:b]`` (at most ``I * _BLOCK``
    dense floats at a time), so memory stays at ``out`` plus one block. Returns out."""
    xt = sp.csr_matrix(x.T, dtype=out.dtype)  # (I, U)
    xc = sp.csc_matrix(x, dtype=out.dtype)  # (U, I), columns cheap to slice
    n = out.shape[0]
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        out[:, a:b] = (xt @ xc[:, a:b]).toarray()  # (I, b - a)
    return out


def _sym_block(a: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle is that of square ``a`` (a small copy)."""
    return np.tril(a) + np.tril(a, -1).T


def spd_inverse_inplace(a: np.ndarray, block: int = _BLOCK) -> np.ndarray:
    """Overwrite the symmetric positive definite ``a`` (I, I), C-order, with its inverse.

    Blocked and in place, from matrix products on (block, I) panels and LAPACK on
    (block, block) diagonal blocks only: (1) Cholesky ``a = L L^T`` (right-looking, L in
    the lower triangle); (2) ``M = L^-1`` a row block at a time from the top; (3)
    ``P = M^T M`` a row block at a time from the top (row block J of P needs only rows >= J
    of M, which are not yet overwritten); (4) the lower triangle mirrored onto the upper.
    Reads only a's lower triangle; extra memory is a few (block, I) temporaries. Not LAPACK's
    potrf/potri on the whole matrix: the OpenBLAS that SciPy ships crashes (SIGSEGV) in
    threaded ``spotrf`` at ~40,000 items, and solvers that copy their input (torch,
    ``scipy.linalg.inv``) double the peak memory.

    Raises DataError when a is not positive definite. Returns a.
    """
    n = a.shape[0]
    bounds = [(r, min(n, r + block)) for r in range(0, n, block)]
    # (1) Cholesky: L_kk = chol(A_kk); L_rk = A_rk L_kk^-T; A_rj -= L_rk L_jk^T (lower part)
    for k0, k1 in bounds:
        try:
            lkk = np.linalg.cholesky(_sym_block(a[k0:k1, k0:k1]))  # (b, b) lower
        except np.linalg.LinAlgError as e:
            raise DataError("ease: X^T X + l2*I is not positive definite; raise l2.") from e
        a[k0:k1, k0:k1] = lkk
        below = [b for b in bounds if b[0] >= k1]
        for r0, r1 in below:  # solve L_kk X^T = A_rk^T
            a[r0:r1, k0:k1] = scipy.linalg.solve_triangular(
                lkk, a[r0:r1, k0:k1].T, lower=True, check_finite=False
            ).T
        for r0, r1 in below:
            a[r0:r1, k1:r1] -= a[r0:r1, k0:k1] @ a[k1:r1, k0:k1].T  # (b, r1 - k1)
    for r0, r1 in bounds:  # clear the strict upper triangle: L alone
        a[r0:r1, r1:] = 0.0
        a[r0:r1, r0:r1] = np.tril(a[r0:r1, r0:r1])
    # (2) M = L^-1: M_ii = L_ii^-1, M_i,<i = -M_ii (L_i,<i M_<i,<i)
    for i0, i1 in bounds:
        mii = scipy.linalg.solve_triangular(
            a[i0:i1, i0:i1], np.eye(i1 - i0, dtype=a.dtype), lower=True, check_finite=False
        )
        if i0 > 0:
            a[i0:i1, :i0] = -(mii @ (a[i0:i1, :i0] @ a[:i0, :i0]))  # (b, i0)
        a[i0:i1, i0:i1] = mii
    # (3) P = M^T M, lower triangle: P_J,<=J = (M_>=J,J)^T M_>=J,<=J
    for j0, j1 in bounds:
        a[j0:j1, :j1] = a[j0:, j0:j1].T @ a[j0:, :j1]  # (b, j1)
    # (4) upper = lower^T
    for r0, r1 in bounds:
        a[r0:r1, r1:] = a[r1:, r0:r1].T
    return a


def ease_weights(gram: np.ndarray, l2: float, *, overwrite: bool = False) -> np.ndarray:
    """EASE^R weights from a Gram matrix, in the Gram's precision (float32 or float64).

    gram: (I, I) ``X^T X`` (symmetric). Returns B (I, I) with zero diagonal. With
    ``overwrite=True`` and a C-ordered float32/float64 gram, B is computed in gram's own
    buffer (which it returns), so the only (I, I) array is the input; else in a copy
    (float64 unless gram is float32).
    """
    dtype = np.float32 if gram.dtype == np.float32 else np.float64
    in_place = overwrite and gram.dtype == dtype and gram.flags.c_contiguous
    g = gram if in_place else np.array(gram, dtype=dtype, order="C", copy=True)
    g[np.diag_indices_from(g)] += l2
    spd_inverse_inplace(g)  # P
    d = np.diag(g).copy()  # (I,) P_jj
    np.divide(g, -d[None, :], out=g)  # B_ij = -P_ij / P_jj
    g[np.diag_indices_from(g)] = 0.0
    return g


@register("ease")
class EASE(RetrievalModel):
    """EASE^R: scores = seen @ B with the closed-form item-item matrix B.

    Fit memory is about ``4 * n_items^2`` bytes (float32, in place: 6.4 GB at 40,000 items,
    the model then keeps that as B); fit time grows as n_items^3 (a Cholesky factor and an
    inverse). Fit refuses when the estimate exceeds the memory available.

    Parameters
    ----------
    l2: the L2 penalty lambda (Steck uses 200-1000 on MovieLens/Netflix-size data).
    weight_col: interaction column used as X's values (None: binary 0/1).
    max_items: refuse to fit above this many items (None: no limit but the memory check).
    num_threads: BLAS threads for the factorisation (None: the ``recforge.threads`` default).
    """

    supports_history = True

    smoke_params: ClassVar[dict[str, Any]] = {"l2": 10.0}

    def __init__(
        self,
        *,
        l2: float = 500.0,
        weight_col: str | None = None,
        max_items: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.l2 = l2
        self.weight_col = weight_col
        self.max_items = max_items
        self.num_threads = num_threads

    def _check_size(self, nnz: int) -> None:
        need = fit_bytes(self.n_items, nnz)
        if self.max_items is not None and self.n_items > self.max_items:
            raise DataError(
                f"ease: {self.n_items} items exceed max_items={self.max_items}; the dense "
                f"item-item matrix needs about {need / 1e9:.1f} GB to fit. Raise or unset "
                f"max_items if memory allows, filter rare items first, or use itemcf/als."
            )
        avail = available_memory()
        if avail is not None and need > avail:
            raise DataError(
                f"ease: {self.n_items} items need about {need / 1e9:.1f} GB for the dense "
                f"item-item matrix (4 * n_items^2 bytes) but only {avail / 1e9:.1f} GB is "
                f"available. Free memory, keep fewer items (e.g. drop items seen fewer than "
                f"a few times), or use itemcf/als, whose memory grows with the interactions."
            )

    def _fit(self, interactions: Interactions) -> None:
        if self.l2 <= 0:
            raise ConfigError(
                f"ease: l2 must be positive (the Gram matrix may be singular), got {self.l2!r}."
            )
        x = self.seen_
        if self.weight_col is not None:
            x = interactions.to_csr(self.user_vocab_, self.item_vocab_, value=self.weight_col)
        x = sp.csr_matrix(x, dtype=np.float32)
        self._check_size(x.nnz)
        from threadpoolctl import threadpool_limits

        buf = np.empty((self.n_items, self.n_items), dtype=np.float32)  # (I, I)
        with threadpool_limits(resolve_threads(self.num_threads), "blas"):
            gram_into(x, buf)
            self.weights_ = ease_weights(buf, float(self.l2), overwrite=True)  # (I, I)
        # X itself when it differs from the 0/1 seen matrix
        self.input_ = x if self.weight_col is not None else None
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
