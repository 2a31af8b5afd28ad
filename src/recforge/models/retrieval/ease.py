"""EASE^R (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

A linear item-item model ``scores = X B`` with a zero diagonal, in closed form:

    P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P)),   i.e. B_ij = -P_ij / P_jj, B_jj = 0.

The fit works in float32, in place. Item side (``ease_weights``): the Gram matrix ``X^T X``
is written into one dense (n_items, n_items) buffer a block of columns at a time (sparse
products, so no sparse Gram is ever held whole), lambda is added to its diagonal, LAPACK's
Cholesky factorisation and inverse (``spd_inverse_inplace``) overwrite it with P, and B is
made from P in place: peak memory about ``4 * n_items^2`` bytes (6.3 GB at 39,629 items)
plus X. User side (``ease_weights_users``, used when there are fewer users than items and
memory allows): the same B through the Woodbury identity from a (n_users, n_users) inverse,
``(U / I)^3`` of the flops, ``4 * (n_users^2 + n_items^2)`` bytes. The model keeps the
(I, I) buffer as B. Before allocating, fit compares the estimate with the memory available
and refuses with an error that says how much it needs. Figures: docs/BENCHMARKS.md, "EASE
fit memory at scale".
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


def fit_bytes(n_items: int, nnz: int, n_users: int | None = None) -> int:
    """Estimated peak bytes of an EASE fit: the float32 (I, I) buffer, with ``n_users`` the
    float32 (U, U) buffer of the user-side (Woodbury) fit as well, two (_BLOCK, max(U, I))
    float32 temporaries, and X, X^T (nnz values and indices each)."""
    side = 0 if n_users is None else 4 * n_users * n_users
    wide = max(n_items, n_users or 0)
    return 4 * n_items * n_items + side + 2 * 4 * wide * _BLOCK + 24 * nnz


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


def spd_inverse_inplace(a: np.ndarray) -> np.ndarray:
    """Overwrite the symmetric positive definite ``a`` (n, n), C-order, with its inverse.

    LAPACK ``potrf`` (Cholesky) then ``potri`` (inverse from the factor) on a's own buffer:
    a C-order symmetric matrix is its own Fortran-order transpose, so both run in place on
    ``a.T`` (n^3 flops in all, at BLAS speed); the triangle they wrote is then mirrored onto
    the other a block of rows at a time. Both run on one BLAS thread: the OpenBLAS that
    SciPy ships crashed (SIGSEGV) in threaded ``spotrf`` at n = 39,629, and solvers that
    copy their input (torch, ``scipy.linalg.inv``) double the peak memory. Measured at
    n = 6,144 on one core: ~120 GFLOP/s, 2.5x the blocked Python factorisation this
    replaced. Reads only a's upper triangle (the lower one of ``a.T``).

    Raises DataError when a is not positive definite. Returns a.
    """
    from threadpoolctl import threadpool_limits

    f = a.T  # (n, n) Fortran-order view of the same memory; equals a (symmetric)
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (f,))
    with threadpool_limits(1, "blas"):
        c, info = potrf(f, lower=True, overwrite_a=True, clean=False)
        if info > 0:
            raise DataError("ease: the Gram matrix + l2*I is not positive definite; raise l2.")
        if info == 0:
            c, info = potri(c, lower=True, overwrite_c=True)
    if info != 0:
        raise DataError(f"ease: LAPACK potrf/potri failed (info={info}); raise l2.")
    if not np.shares_memory(c, a):  # a LAPACK wrapper that copied (not SciPy's): copy back
        f[...] = c
    n = a.shape[0]
    for r0 in range(0, n, _BLOCK):  # a's upper triangle holds P: mirror it onto the lower
        r1 = min(n, r0 + _BLOCK)
        a[r0:r1, :r0] = a[:r0, r0:r1].T
        d = a[r0:r1, r0:r1]
        d[...] = np.triu(d) + np.triu(d, 1).T
    return a


def _weights_from_p(p: np.ndarray) -> np.ndarray:
    """In place: ``P -> B = -P / diag(P)`` column-wise with a zero diagonal (P may be any
    positive multiple of the inverse: the scale cancels)."""
    d = np.diag(p).copy()  # (I,) P_jj
    np.divide(p, -d[None, :], out=p)  # B_ij = -P_ij / P_jj
    p[np.diag_indices_from(p)] = 0.0
    return p


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
    return _weights_from_p(spd_inverse_inplace(g))


def ease_weights_users(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """The same B as ``ease_weights(X^T X, l2)`` from the (U, U) side, for U < I users.

    Woodbury: ``(X^T X + l2 I)^-1 = (I - X^T (X X^T + l2 I)^-1 X) / l2``, so one (U, U)
    inverse replaces the (I, I) one ((U / I)^3 of the flops: 0.43x at 30,000 users x 39,629
    items). ``Q = I - X^T K^-1 X`` is built a block of item columns at a time from two
    sparse-dense products (nnz * U and nnz * I multiply-adds), and B = -Q / diag(Q) in
    place. x: (U, I) float32 CSR. Memory: the (I, I) result, the (U, U) inverse, two blocks.
    """
    n_users, n_items = x.shape
    xt = sp.csr_matrix(x.T)  # (I, U)
    k = gram_into(xt, np.empty((n_users, n_users), dtype=x.dtype))  # (U, U) X X^T
    k[np.diag_indices_from(k)] += l2
    spd_inverse_inplace(k)  # K^-1
    q = np.empty((n_items, n_items), dtype=x.dtype)  # (I, I)
    for a in range(0, n_items, _BLOCK):
        b = min(n_items, a + _BLOCK)
        w = np.asarray(xt[a:b] @ k)  # (b - a, U): x_j^T K^-1
        q[:, a:b] = xt @ w.T  # (I, b - a): X^T K^-1 X[:, a:b]
    del k, w
    np.negative(q, out=q)
    q[np.diag_indices_from(q)] += 1.0  # Q = l2 * P
    return _weights_from_p(q)


@register("ease")
class EASE(RetrievalModel):
    """EASE^R: scores = seen @ B with the closed-form item-item matrix B.

    Fit memory is about ``4 * n_items^2`` bytes (float32, in place: 6.3 GB at 39,629 items,
    the model then keeps that as B), plus ``4 * n_users^2`` when there are fewer users than
    items (the user-side fit); fit time grows as min(n_users, n_items)^3 (a Cholesky factor
    and an inverse). Fit refuses when the estimate exceeds the memory available.

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

    def _check_size(self, nnz: int) -> bool:
        """Refuse sizes over max_items or over the memory available; returns whether the
        user-side (Woodbury) fit is used: when there are fewer users than items and its
        extra (U, U) buffer fits in memory."""
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
        users_side = fit_bytes(self.n_items, nnz, self.n_users)
        return self.n_users < self.n_items and (avail is None or users_side <= avail)

    def _fit(self, interactions: Interactions) -> None:
        if self.l2 <= 0:
            raise ConfigError(
                f"ease: l2 must be positive (the Gram matrix may be singular), got {self.l2!r}."
            )
        x = self.seen_
        if self.weight_col is not None:
            x = interactions.to_csr(self.user_vocab_, self.item_vocab_, value=self.weight_col)
        x = sp.csr_matrix(x, dtype=np.float32)
        users_side = self._check_size(x.nnz)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(resolve_threads(self.num_threads), "blas"):
            if users_side:
                self.weights_ = ease_weights_users(x, float(self.l2))  # (I, I)
            else:
                buf = gram_into(x, np.empty((self.n_items, self.n_items), dtype=np.float32))
                self.weights_ = ease_weights(buf, float(self.l2), overwrite=True)  # (I, I)
        # X itself when it differs from the 0/1 seen matrix
        self.input_ = x if self.weight_col is not None else None
        log.info(
            "ease: %d items, l2=%s, %s side",
            self.n_items,
            self.l2,
            "user" if users_side else "item",
        )

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
