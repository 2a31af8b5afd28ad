"""Matrix factorisation for implicit feedback: ALS and BPR, wrapping ``implicit``.

Both models train with Ben Frederickson's ``implicit`` (CPU implementations,
``implicit.cpu.als.AlternatingLeastSquares`` and ``implicit.cpu.bpr.BayesianPersonalizedRanking``)
and copy the learned factors out, so that scoring, saving, ANN indexing and the recall
pipeline work as for every other ``EmbeddingMixin`` model, and no implicit object is kept
or pickled.

* ALS (Hu, Koren & Volinsky 2008): weighted least squares on confidence ``1 + alpha * r``,
  where ``r`` is 1 per seen (user, item) or the summed ``weight_col``.
* BPR (Rendle et al. 2009): SGD on the pairwise loss ``-log sigma(x_ui - x_uj)``. implicit
  appends an item-bias column to the item factors and a constant 1 to the user factors; we
  keep both, so ``user_factors_ @ item_factors_.T`` equals implicit's own scores exactly.

Threads: ``num_threads=None`` is the ``recforge.threads`` default (``--threads``,
``RECFORGE_THREADS``, else the free cores). BPR with more than one thread is Hogwild SGD and
not reproducible, so BPR with a fixed ``random_state`` and ``num_threads=None`` trains on one
thread, and warns once when more are asked for. ALS is deterministic with any thread count.
BLAS is limited to one thread during the fit, as implicit recommends.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.models.base import EmbeddingMixin, RetrievalModel
from recforge.models.registry import register
from recforge.progress import show_progress
from recforge.threads import reproducible_threads, resolve_threads

log = logging.getLogger(__name__)


def _check_positive(owner: str, **values: Any) -> None:
    for name, v in values.items():
        if v is None or v <= 0:
            raise ConfigError(f"{owner}: {name} must be positive, got {v!r}.")


SPARSE_DENSITY = 0.002  # below: the sparse-data confidence settings of ALS


def als_confidence(
    density: float, alpha: float | None, regularization: float | None
) -> tuple[float, float]:
    """ALS's (alpha, regularization): the given values, or where None the density-aware
    defaults: alpha 20 and regularization 0.1 when the training matrix is sparser than
    ``SPARSE_DENSITY`` (0.2% of user-item cells seen), else alpha 1 and regularization 0.01.

    Chosen on validation splits (docs/BENCHMARKS.md, "Defaults across dataset sizes"):
    on Amazon Beauty (density 0.06%) and the 40k-item synthetic set (0.04%) the sparse
    settings gave much higher Recall@20, on ML-100K (2.7%) and ML-latest-small (0.95%)
    much lower; the threshold lies in the gap between them."""
    sparse = density < SPARSE_DENSITY
    a = (20.0 if sparse else 1.0) if alpha is None else float(alpha)
    r = (0.1 if sparse else 0.01) if regularization is None else float(regularization)
    return a, r


class _ImplicitMF(EmbeddingMixin, RetrievalModel):
    """Shared fit plumbing: build the user-item matrix, train implicit, copy factors out."""

    weight_col: str | None
    num_threads: int | None
    progress: bool | None

    def _train_matrix(self, interactions: Interactions) -> sp.csr_matrix:
        """(n_users, n_items) float32: 1 per seen pair, or the summed ``weight_col``."""
        if self.weight_col is None:
            return self.seen_
        m = interactions.to_csr(self.user_vocab_, self.item_vocab_, value=self.weight_col)
        if m.data.size and m.data.min() < 0:
            raise ConfigError(
                f"{type(self).__name__}: column {self.weight_col!r} holds negative values; "
                f"implicit feedback weights must be >= 0."
            )
        return m

    def _build(self, matrix: sp.csr_matrix) -> Any:
        raise NotImplementedError

    def _fit(self, interactions: Interactions) -> None:
        from threadpoolctl import threadpool_limits

        matrix = self._train_matrix(interactions)
        with threadpool_limits(1, "blas"):
            est = self._build(matrix)
            est.fit(matrix, show_progress=show_progress(self.progress))
        self.user_factors_ = np.ascontiguousarray(
            est.user_factors, dtype=np.float32
        )  # (n_users, d)
        self.item_factors_ = np.ascontiguousarray(
            est.item_factors, dtype=np.float32
        )  # (n_items, d)
        log.info(
            "%s: %d users x %d items, factors %s",
            type(self).__name__,
            self.n_users,
            self.n_items,
            self.item_factors_.shape[1],
        )


@register("als")
class ALS(_ImplicitMF):
    """Implicit ALS (Hu et al. 2008) via ``implicit.cpu.als.AlternatingLeastSquares``.

    Parameters
    ----------
    factors: latent dimension d.
    regularization: L2 penalty lambda on both factor matrices (None: 0.1 on sparse data,
        0.01 otherwise, see ``als_confidence``).
    alpha: confidence scale, ``c_ui = 1 + alpha * r_ui`` (None: 20 when fewer than 0.2% of
        the user-item cells are seen, as on Amazon Beauty or the 30k x 40k synthetic set; 1 on
        denser data such as MovieLens; chosen on validation splits of four datasets).
    iterations: ALS sweeps (each solves users then items).
    use_cg: conjugate-gradient solver (faster) instead of the exact Cholesky solve.
    weight_col: interaction column summed into ``r_ui`` (e.g. "weight", play counts);
        None uses 1 per seen pair.
    num_threads: implicit's threads (None: the ``recforge.threads`` default).
    random_state: seed of the factor initialisation.
    progress: implicit's progress bar over iterations (None: only in an interactive terminal).

    After fit, ``alpha_`` and ``regularization_`` hold the values used.
    """

    smoke_params: ClassVar[dict[str, Any]] = {
        "factors": 8,
        "iterations": 3,
        "num_threads": 1,
        "random_state": 0,
    }

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float | None = None,
        alpha: float | None = None,
        iterations: int = 15,
        use_cg: bool = True,
        weight_col: str | None = None,
        num_threads: int | None = None,
        random_state: int | None = 0,
        progress: bool | None = None,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.use_cg = use_cg
        self.weight_col = weight_col
        self.num_threads = num_threads
        self.random_state = random_state
        self.progress = progress

    def _build(self, matrix: sp.csr_matrix) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        self.alpha_, self.regularization_ = als_confidence(
            matrix.nnz / max(1, matrix.shape[0] * matrix.shape[1]), self.alpha, self.regularization
        )
        _check_positive("als", factors=self.factors, iterations=self.iterations, alpha=self.alpha_)
        if self.regularization_ < 0:
            raise ConfigError(f"als: regularization must be >= 0, got {self.regularization_!r}.")
        log.info("als: alpha=%s, regularization=%s", self.alpha_, self.regularization_)
        return AlternatingLeastSquares(
            factors=int(self.factors),
            regularization=float(self.regularization_),
            alpha=float(self.alpha_),
            iterations=int(self.iterations),
            use_cg=bool(self.use_cg),
            num_threads=resolve_threads(self.num_threads),
            random_state=self.random_state,
        )


@register("bpr")
class BPR(_ImplicitMF):
    """Bayesian Personalized Ranking (Rendle et al. 2009) via
    ``implicit.cpu.bpr.BayesianPersonalizedRanking``.

    ``item_factors_`` is (n_items, factors + 1), its last column the item bias;
    ``user_factors_`` is (n_users, factors + 1), its last column 1.

    Parameters
    ----------
    factors: latent dimension (without the bias column).
    learning_rate: SGD step size.
    regularization: L2 penalty on the factors.
    iterations: epochs over the training pairs.
    verify_negative_samples: resample negatives the user has seen (slower, more exact).
    weight_col: ignored by BPR's loss except that pairs with weight 0 are dropped.
    num_threads: implicit's threads (None: 1 when random_state is set, which makes runs
        repeat exactly; else the ``recforge.threads`` default).
    random_state: seed of initialisation and sampling.
    progress: implicit's progress bar over iterations (None: only in an interactive terminal).
    """

    smoke_params: ClassVar[dict[str, Any]] = {
        "factors": 8,
        "iterations": 5,
        "num_threads": 1,
        "random_state": 0,
    }

    def __init__(
        self,
        *,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        verify_negative_samples: bool = True,
        weight_col: str | None = None,
        num_threads: int | None = None,
        random_state: int | None = 0,
        progress: bool | None = None,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.verify_negative_samples = verify_negative_samples
        self.weight_col = weight_col
        self.num_threads = num_threads
        self.random_state = random_state
        self.progress = progress

    def _train_matrix(self, interactions: Interactions) -> sp.csr_matrix:
        m = super()._train_matrix(interactions)
        if self.weight_col is not None:  # BPR treats every stored pair as a positive
            m = m.copy()
            m.eliminate_zeros()
            m.data[:] = 1.0
        return m

    def _build(self, matrix: sp.csr_matrix) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        _check_positive(
            "bpr",
            factors=self.factors,
            iterations=self.iterations,
            learning_rate=self.learning_rate,
        )
        return BayesianPersonalizedRanking(
            factors=int(self.factors),
            learning_rate=float(self.learning_rate),
            regularization=float(self.regularization),
            iterations=int(self.iterations),
            verify_negative_samples=bool(self.verify_negative_samples),
            num_threads=reproducible_threads(self.num_threads, self.random_state, "bpr"),
            random_state=self.random_state,
        )
