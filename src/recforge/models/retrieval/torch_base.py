"""Shared plumbing of the torch retrieval models (DSSM, YouTube-DNN, LightGCN, SimpleX,
FM-recall): the training config, the retrieval losses with log-Q correction, batches, and
saving the torch weights next to the materialised factors.

A subclass builds an ``nn.Module`` with ``user_vectors(users)`` / ``item_vectors(items)``
(or its own scoring) and a ``loss_fn(module, batch)``; ``recforge.train.Trainer`` trains
it; afterwards the subclass writes ``user_factors_`` (n_users, d) and ``item_factors_``
(n_items, d) as float32 NumPy, so scoring, saving and Faiss never need torch.

Losses (every logit is a dot product ``s = u . v``, divided by ``temperature``):

* ``sampled_softmax``: a shared set of N negatives drawn with probability q (popularity **
  alpha); logits ``s / T - log q(item)`` for the positive and every negative (Jean et al.
  2015, Bengio & Senecal 2008), then softmax cross-entropy with the positive as target.
  A negative equal to the row's positive (an "accidental hit") is masked out.
* ``in_batch``: the other positives of the batch are the negatives; items appear in a
  batch with probability proportional to their frequency p, so logits are
  ``s / T - log p(item)`` (Yi et al. 2019, "Sampling-bias-corrected neural modeling").
* ``infonce``: the in-batch negatives plus N uniformly drawn shared ones, ``s / T``, no
  correction (``recforge.losses.infonce``); a negative that is the row's own positive item
  (a popular item twice in the batch, or drawn among the shared ones) is masked out.

Mined hard negatives (two-tower ``hard_negatives``) join the negatives of any loss; under
the softmax losses all logits are then corrected by the expected count of the item in the
batch's negatives from both samplers (``_mixture_log_q``).
* ``bpr``: ``-log sigmoid((s_pos - s_neg) / T)`` with one uniform unseen negative per row.

The softmax losses are ``recforge.losses.sampled_softmax`` / ``infonce``; this module only
assembles their inputs (``retrieval_loss``), including mined hard negatives.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from recforge import losses as L
from recforge.config import from_dict
from recforge.data.batching import (
    PairSampler,
    PopularitySampler,
    drop_targets,
    uniform_negatives,
)
from recforge.data.features import EncodedFeatures, FeatureEncoder
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import EmbeddingMixin, RetrievalModel, mask_seen
from recforge.nn.inputs import Batch, take, to_tensors
from recforge.threads import set_torch_threads
from recforge.topk import topk
from recforge.train.config import TrainConfig
from recforge.train.trainer import History, Trainer, history_from_json, history_to_json

log = logging.getLogger(__name__)

LOSSES = ("sampled_softmax", "in_batch", "infonce", "bpr")
VALID_ROWS = 2000  # validation rows ranked per epoch (a sample when there are more)
# training cells early stopping holds out (one per user, at most 2% of the pairs): fewer
# than VALID_ROWS and it does not stop early, at most HELD_OUT_ROWS
HELD_OUT_ROWS = 2000
MODULE_PREFIX = "module."


# ---------------------------------------------------------------------- losses
def log_q_corrected(
    scores: torch.Tensor, log_q: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The log-Q corrected logits ``scores / temperature - log_q`` (broadcasting); what
    ``recforge.losses.sampled_softmax`` feeds its cross-entropy."""
    return scores / temperature - log_q


# ---------------------------------------------------------------------- sparse products
def torch_csr(m: sp.spmatrix) -> torch.Tensor:
    """A SciPy matrix as a torch sparse CSR float32 tensor (int64 indices, sorted).

    CSR, not COO: ``torch.sparse.mm`` of a CSR matrix by a dense (N, D) one is a row-wise
    kernel with no sort or coalesce (LightGCN's step on a 1.28M-edge graph: ~2x faster)."""
    csr = sp.csr_matrix(m, dtype=np.float32)
    csr.sort_indices()
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data),
            csr.shape,
            check_invariants=False,  # a valid SciPy CSR; checks would cost every batch
        )


class _SparseMM(torch.autograd.Function):
    """``s @ x`` (s sparse CSR, x dense) whose backward is ``s_t @ grad`` with a CSR
    ``s_t`` the caller built once: both passes run the same row-wise CSR kernel (autograd's
    own backward of a CSR product transposes s, and the gather-based alternatives sort
    their indices in the backward pass)."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, s_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.s_t = s_t
        return torch.sparse.mm(s, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.s_t, grad)


def sparse_mm(s: torch.Tensor, s_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``s @ x`` differentiable in x: s (M, N) and its transpose s_t (N, M) as torch CSR
    (``torch_csr``; pass s twice when it is symmetric), x (N, D) -> (M, D)."""
    return _SparseMM.apply(s, s_t, x)


def history_mean_rows(
    history: np.ndarray, n_cols: int, mean: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """history (B, L) item index + 1 (0 = padding) -> the (B, n_cols) CSR matrix whose row b
    averages (``mean``; else sums) row b's real items (1 / count at each, else 1), and its
    (n_cols, B) transpose: ``sparse_mm(*rows, table)`` pools a history over the embedding
    table (n_cols, D) with a backward pass that is one CSR product, not a sort of the B * L
    indices that an embedding lookup's backward does (SimpleX, the two-tower models)."""
    rows, pos = np.nonzero(history)  # (nnz,), row-major order
    cols = history[rows, pos]
    if mean:
        count = np.bincount(rows, minlength=len(history)).astype(np.float32)
        vals = 1.0 / count[rows]
    else:
        vals = np.ones(len(rows), dtype=np.float32)
    m = sp.csr_matrix((vals, (rows, cols)), shape=(len(history), n_cols), dtype=np.float32)
    return torch_csr(m), torch_csr(m.T)


# ---------------------------------------------------------------------- side features
class FeatureRows(nn.Module):
    """Encoded side features of every user (or item) as buffers, so that they move and
    save with the module's weights. ``take(idx)`` cuts a batch dict (``recforge.nn.inputs``)."""

    def __init__(self, encoded: EncodedFeatures) -> None:
        super().__init__()
        full = to_tensors(encoded)
        self.register_buffer("categorical", full["categorical"].clone())
        self.register_buffer("numeric", full["numeric"].clone())
        self.multi_names = sorted(full["multi"])
        for name in self.multi_names:
            self.register_buffer(f"multi_{name}", full["multi"][name].clone())

    def rows(self) -> Batch:
        return {
            "categorical": self.categorical,
            "numeric": self.numeric,
            "multi": {n: getattr(self, f"multi_{n}") for n in self.multi_names},
        }

    def take(self, idx: torch.Tensor) -> Batch:
        """Rows ``idx`` (B,) as a batch dict."""
        return take(self.rows(), idx)

    @staticmethod
    def encoded_from_state(
        weights: dict[str, torch.Tensor], prefix: str, encoder: FeatureEncoder
    ) -> EncodedFeatures:
        """Rebuild the ``EncodedFeatures`` a ``FeatureRows`` at ``prefix`` was made from."""
        multi = {
            f.name: weights[f"{prefix}.multi_{f.name}"].numpy() for f in encoder.fields_of("multi")
        }
        return EncodedFeatures(
            weights[f"{prefix}.categorical"].numpy(), weights[f"{prefix}.numeric"].numpy(), multi
        )


def encode_side_table(
    table: pd.DataFrame | None,
    raw_ids: np.ndarray,
    *,
    columns: Sequence[str] | None,
    min_count: int,
    where: str,
) -> tuple[FeatureEncoder, EncodedFeatures] | None:
    """Fit a ``FeatureEncoder`` on a side table aligned to ``raw_ids`` (rows missing from
    the table get unknown/zero features, a repeated id uses its first row) and encode it:
    (encoder, (len(raw_ids) rows)).

    columns: the table's columns to use (None = all). Returns None when there is no table
    or no column.
    """
    if table is not None and columns is not None:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(
                f"{where}: columns {missing} are not in the table ({list(table.columns)})."
            )
    if table is None or (columns is not None and len(columns) == 0) or table.shape[1] == 0:
        return None
    table = table[~table.index.duplicated(keep="first")]  # a repeated id: its first row
    frame = table.reindex(raw_ids).reset_index(drop=True)
    if columns is not None:
        frame = frame[list(columns)]
    enc = FeatureEncoder(min_count=min_count).fit(frame)
    return enc, enc.transform(frame)


# ---------------------------------------------------------------------- batches
class EpochBatches:
    """A sized iterable of batches (the Trainer reads ``len`` for its schedules)."""

    def __init__(self, n: int, make: Callable[[], Iterator[Any]]) -> None:
        self.n, self._make = n, make

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        return self._make()


# ---------------------------------------------------------------------- base model
class TorchRetrievalModel(EmbeddingMixin, RetrievalModel):
    """Base of the torch retrieval models; subclasses implement ``_fit``.

    Shared hyperparameters (keyword-only; a model's own defaults for them are in its
    ``train_defaults``):

    embedding_dim: size of the user/item vectors.
    epochs: passes over the training pairs.
    batch_size: training pairs per step.
    lr: peak learning rate.
    optimizer: "sgd" | "adagrad" | "adam" | "adamw".
    weight_decay: coupled L2 (decoupled for adamw) on every parameter.
    seed: seeds initialisation, sampling and batch order.
    num_threads: torch threads while training (None: ``recforge.threads`` default).
    progress: a progress bar per epoch (None: only in an interactive terminal).

    A model subclasses it like a ``TorchRanker``: its own keyword-only parameters in
    ``__init__``, the shared ones as ``**shared``::

        @register("lightgcn")
        class LightGCN(TorchRetrievalModel):
            train_defaults = {"epochs": 60, "batch_size": 2048, "lr": 5e-3}

            def __init__(self, *, n_layers: int = 3, **shared: Any) -> None:
                super().__init__(**(self.train_defaults | shared))
                self.n_layers = n_layers

    ``param_names()`` lists the model's own names, then the shared ones, so that
    ``get_params``, the registry's checks and save/load see all of them; a misspelt keyword
    is still a ``TypeError``. ``_train`` builds the ``TrainConfig`` and runs the ``Trainer``.
    """

    module_: nn.Module | None = None
    # the model's defaults for the shared parameters, where they differ from __init__'s
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        *,
        embedding_dim: int = 64,
        epochs: int = 10,
        batch_size: int = 512,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress

    # ------------------------------------------------------------------ training
    def _train_config(self, **extra: Any) -> TrainConfig:
        cfg = {
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "optimizer": self.optimizer,
            "weight_decay": float(self.weight_decay),
            "seed": int(self.seed),
            "num_threads": self.num_threads,
            "progress": self.progress,
        }
        cfg.update(extra)
        return from_dict(TrainConfig, cfg, where=f"{type(self).__name__} training config")

    def _train(
        self,
        module: nn.Module,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        batches: Callable[[int], Any],
        vectors: Callable[[nn.Module], tuple[np.ndarray, np.ndarray]] | None = None,
        **config: Any,
    ) -> History:
        """Run the Trainer. ``vectors(module) -> (user vectors (n_users, D), item vectors
        (n_items, D))``: with it and ``fit(..., valid=...)``, each epoch reports recall@10
        and ndcg@10 of the validation items (in the history and the progress bar)."""
        valid_fn = self._epoch_valid_fn(vectors)
        history = Trainer(self._train_config(**config)).fit(module, loss_fn, batches, valid_fn)
        self.train_history_ = history
        return history

    def _epoch_valid_fn(
        self, vectors: Callable[[nn.Module], tuple[np.ndarray, np.ndarray]] | None
    ) -> Callable[[nn.Module], dict[str, float]] | None:
        """Validation metrics per epoch: rank of each held-out (user, item) among the items
        the user has not seen in training, on up to max(``VALID_ROWS``, ``HELD_OUT_ROWS``)
        rows (a sample of ``fit(valid=...)``'s when there are more; every cell
        ``early_stopping_split`` held out)."""
        valid = getattr(self, "_epoch_valid", None)
        if valid is None or vectors is None:
            return None
        u = self.user_vocab_.index(valid.frame["user"].to_numpy(), unknown="mask")
        i = self.item_vocab_.index(valid.frame["item"].to_numpy(), unknown="mask")
        keep = np.flatnonzero((u >= 0) & (i >= 0))
        if len(keep) == 0:
            log.warning("%s: no validation row has a training user and item", type(self).__name__)
            return None
        cap = max(VALID_ROWS, HELD_OUT_ROWS)  # a carved set is never larger than HELD_OUT_ROWS
        if len(keep) > cap:
            keep = np.sort(np.random.default_rng(self.seed).choice(keep, cap, replace=False))
        users, items = u[keep], i[keep]

        def valid_fn(module: nn.Module) -> dict[str, float]:
            user_vecs, item_vecs = vectors(module)
            rank = np.empty(len(users), dtype=np.int64)  # 0-based rank of the held-out item
            for s in range(0, len(users), VALID_ROWS):  # (VALID_ROWS, n_items) scores at a time
                u_s, i_s = users[s : s + VALID_ROWS], items[s : s + VALID_ROWS]
                scores = user_vecs[u_s] @ item_vecs.T
                target = scores[np.arange(len(u_s)), i_s].copy()
                mask_seen(scores, self.seen_, u_s)
                rank[s : s + len(u_s)] = (scores > target[:, None]).sum(1)
            hit = rank < 10
            return {
                "recall@10": float(hit.mean()),
                "ndcg@10": float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean()),
                "recall@20": float((rank < 20).mean()),
            }

        return valid_fn

    @property
    def train_loss_(self) -> list[float]:
        """Mean training loss per epoch (from ``train_history_``)."""
        hist = getattr(self, "train_history_", None)
        return [] if hist is None else [float(x) for x in hist.train_loss]

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        state["train_history"] = history_to_json(getattr(self, "train_history_", None))
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.train_history_ = history_from_json(state["train_history"])

    def fit(
        self, interactions: Interactions, valid: Interactions | None = None
    ) -> TorchRetrievalModel:
        """Check the shared parameters, set torch's threads once, then fit (see
        ``RetrievalModel.fit``); with ``valid`` (held-out interactions of the training users)
        each epoch reports validation recall@10 / ndcg@10. Returns self."""
        self._check_common()
        set_torch_threads(self.num_threads)
        self._epoch_valid = valid
        try:
            return super().fit(interactions)  # type: ignore[return-value]
        finally:
            del self._epoch_valid

    def _check_common(
        self, names: tuple[str, ...] = ("embedding_dim", "epochs", "batch_size")
    ) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(
                    f"{type(self).__name__}: {name} must be a positive integer, got {value!r}."
                )

    # ------------------------------------------------------------------ hard negatives
    def _mine_hard_negatives(
        self,
        user_vecs: np.ndarray,
        item_vecs: np.ndarray,
        n_hard: int,
        skip: int,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Per user, the items ranked ``skip .. skip + n_hard - 1`` by the current vectors
        among the items the user has not seen (the top ``skip`` may be unlabelled
        positives, so they are left out). Returns (n_users, n_hard) int64."""
        n_hard = min(n_hard, max(1, self.n_items - skip))
        out = np.empty((len(user_vecs), n_hard), dtype=np.int64)
        k = min(self.n_items, skip + n_hard)
        for start in range(0, len(user_vecs), batch_size):
            rows = np.arange(start, min(start + batch_size, len(user_vecs)))
            scores = user_vecs[rows] @ item_vecs.T
            mask_seen(scores, self.seen_, rows)
            idx, vals = topk(scores, k)
            idx = idx[:, k - n_hard :]
            # users with too few unseen items: fall back to random items
            bad = ~np.isfinite(vals[:, k - n_hard :])
            idx[bad] = np.random.default_rng(start).integers(0, self.n_items, int(bad.sum()))
            out[rows] = idx
        return out

    # ------------------------------------------------------------------ persistence
    def _module_arrays(self) -> dict[str, np.ndarray]:
        """The torch module's weights as float32 NumPy arrays under ``module.*``."""
        if self.module_ is None:
            return {}
        return {
            MODULE_PREFIX + k: v.detach().cpu().numpy().astype(np.float32, copy=False)
            if v.is_floating_point()
            else v.detach().cpu().numpy()
            for k, v in self.module_.state_dict().items()
        }

    @staticmethod
    def _module_state(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {
            k[len(MODULE_PREFIX) :]: torch.from_numpy(np.array(v))
            for k, v in arrays.items()
            if k.startswith(MODULE_PREFIX)
        }


def sampled_batches(
    sampler: PairSampler,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    loss: str,
    n_negatives: int,
    popularity: PopularitySampler | None,
    in_batch_log_q: np.ndarray | None,
    hard_pool: np.ndarray | None = None,
    n_hard_per_row: int = 1,
    extra: Callable[[np.ndarray, np.ndarray], dict[str, torch.Tensor]] | None = None,
) -> EpochBatches:
    """One epoch of training batches for ``loss`` (see the module docstring).

    Each batch is a dict of tensors: ``users`` (B,), ``pos`` (B,), and per loss:
    ``neg`` (N,) shared negatives + ``log_q_neg`` (N,) + ``log_q_pos`` (B,)
    (sampled_softmax / in_batch), or ``neg`` (B,) one per row (bpr); ``hard`` (B, H) when a
    hard-negative pool (n_users, P) is given; plus whatever ``extra(users, pos)`` adds.
    """
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r}; choose one of {LOSSES}.")
    n_batches = -(-len(sampler) // batch_size)
    rng = np.random.default_rng([seed, epoch])

    def make() -> Iterator[dict[str, torch.Tensor]]:
        for users, pos in sampler.batches(batch_size, rng):
            b: dict[str, torch.Tensor] = {
                "users": torch.from_numpy(users),
                "pos": torch.from_numpy(pos),
            }
            if loss == "sampled_softmax":
                assert popularity is not None
                neg = popularity.sample(n_negatives, rng)
                b["neg"] = torch.from_numpy(neg)
                b["log_q_neg"] = torch.from_numpy(popularity.log_q[neg])
                b["log_q_pos"] = torch.from_numpy(popularity.log_q[pos])
            elif loss == "in_batch":
                assert in_batch_log_q is not None
                b["log_q_pos"] = torch.from_numpy(in_batch_log_q[pos])
            elif loss == "infonce":
                b["neg"] = torch.from_numpy(rng.integers(0, sampler.n_items, n_negatives))
            else:  # bpr
                b["neg"] = torch.from_numpy(uniform_negatives(sampler, users, 1, rng)[:, 0])
            if hard_pool is not None:
                cols = rng.integers(0, hard_pool.shape[1], size=(len(users), n_hard_per_row))
                hard = hard_pool[users[:, None], cols]
                b["hard"] = torch.from_numpy(hard)
                if loss == "sampled_softmax":
                    assert popularity is not None
                    b.update(
                        _mixture_log_q(
                            {"pos": pos, "neg": neg, "hard": hard.reshape(-1)},
                            popularity.q * n_negatives,
                            hard_pool[users],
                            n_hard_per_row,
                        )
                    )
                elif loss == "in_batch":
                    assert in_batch_log_q is not None
                    b.update(
                        _mixture_log_q(
                            {"pos": pos, "hard": hard.reshape(-1)},
                            np.exp(in_batch_log_q) * len(users),
                            hard_pool[users],
                            n_hard_per_row,
                        )
                    )
            if extra is not None:
                b.update(extra(users, pos))
            yield b

    return EpochBatches(n_batches, make)


def _mixture_log_q(
    ids: dict[str, np.ndarray],
    expected_sampled: np.ndarray,
    pools: np.ndarray,
    n_hard_per_row: int,
) -> dict[str, torch.Tensor]:
    """``log_q_<name>`` for each id array when mined hard negatives join the sampled ones.

    The negatives of a batch then come from two samplers: the shared (or in-batch) draws,
    which hold item i ``expected_sampled[i]`` times on average (N q(i), or B p(i) in-batch),
    and the hard draws, ``n_hard_per_row`` per row from its pool of P mined items, which
    hold it ``n_hard_per_row / P`` times for each batch row whose pool contains it. Every
    logit, positive, sampled or hard, is corrected by the log of the total expected count
    (the balance heuristic of multiple importance sampling): a hard negative carries the
    same weight as a sampled one of the same score and frequency, not the log-Q of 0 (an
    item drawn with certainty) it had next to log q ~ -8 sampled ones. Without hard
    negatives this is the plain correction shifted by a constant (log N), which softmax
    ignores. pools: (B, P) the batch rows' pools.
    """
    items, rows_with = np.unique(pools, return_counts=True)  # rows whose pool holds it
    expected_hard_items = rows_with * (n_hard_per_row / pools.shape[1])
    out = {}
    for name, idx in ids.items():
        at = np.searchsorted(items, idx).clip(max=len(items) - 1)
        expected_hard = np.where(items[at] == idx, expected_hard_items[at], 0.0)
        total = expected_sampled[idx] + expected_hard
        out[f"log_q_{name}"] = torch.from_numpy(np.log(np.maximum(total, 1e-30)).astype(np.float32))
    return out


def retrieval_loss(
    loss: str,
    user: torch.Tensor,
    pos: torch.Tensor,
    batch: dict[str, torch.Tensor],
    item_vectors: Callable[[torch.Tensor], torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    """The ``loss`` of user vectors (B, D) against positive item vectors (B, D) for a batch
    made by ``sampled_batches``; ``item_vectors(idx)`` embeds negatives (N,) -> (N, D).

    Hard negatives (``batch["hard"]`` (B, H)) join the shared negatives; under the
    softmax losses every logit is then corrected by ``_mixture_log_q`` (the batch holds
    ``log_q_hard``), under infonce none is (its negatives are uncorrected by design), and
    infonce masks accidental hits by item id as sampled_softmax does.
    """
    pos_ids = batch["pos"]
    hard_ids = batch["hard"].reshape(-1) if "hard" in batch else None
    if loss == "bpr":
        s_pos = (user * pos).sum(-1) / temperature  # (B,)
        neg_ids = (
            batch["neg"][:, None]
            if hard_ids is None
            else torch.cat([batch["neg"][:, None], batch["hard"]], 1)
        )
        neg = item_vectors(neg_ids.reshape(-1)).reshape(*neg_ids.shape, -1)  # (B, 1 + H, D)
        s_neg = torch.einsum("bd,bnd->bn", user, neg) / temperature  # (B, 1 + H)
        return L.bpr(s_pos, s_neg)
    if loss == "infonce":
        extra_ids = batch["neg"] if hard_ids is None else torch.cat([batch["neg"], hard_ids])
        return L.infonce(
            user,
            pos,
            temperature,
            normalize=False,
            extra_negatives=item_vectors(extra_ids),
            key_ids=pos_ids,
            extra_ids=extra_ids,
        )
    if loss == "in_batch":
        neg, neg_ids, log_q_neg = None, None, None
        if hard_ids is not None:  # in-batch negatives written out, then the hard ones
            neg = torch.cat([pos, item_vectors(hard_ids)])
            neg_ids = torch.cat([pos_ids, hard_ids])
            log_q_neg = torch.cat([batch["log_q_pos"], batch["log_q_hard"]])
    else:  # sampled_softmax
        neg_ids, log_q_neg = batch["neg"], batch["log_q_neg"]
        if hard_ids is not None:
            neg_ids = torch.cat([neg_ids, hard_ids])
            log_q_neg = torch.cat([log_q_neg, batch["log_q_hard"]])
        neg = item_vectors(neg_ids)
    return L.sampled_softmax(
        user,
        pos,
        neg,
        log_q_pos=batch["log_q_pos"],
        log_q_neg=log_q_neg,
        pos_ids=pos_ids,
        neg_ids=neg_ids,
        temperature=temperature,
    )


# ------------------------------------------------- full-graph models (LightGCN, SimpleX)
STEPS_PER_EPOCH = 10  # the batch grows until an epoch would have fewer steps than this


def scaled_batch(
    n_pairs: int,
    batch_size: int,
    lr: float,
    max_batch_size: int,
    steps_per_epoch: int = STEPS_PER_EPOCH,
) -> tuple[int, float]:
    """(batch, lr) for ``n_pairs`` training pairs: ``batch_size`` doubled while the batch stays
    <= ``max_batch_size`` and an epoch keeps >= ``steps_per_epoch`` steps; ``lr`` times the
    square root of the growth. A step of a full-graph model (LightGCN propagates the whole
    graph every step) costs about the same at any batch, so on large logs the larger batch
    is the speed-up: 2048 -> 32,768 at 512k pairs, 16x fewer steps per epoch."""
    batch = int(batch_size)
    while batch * 2 <= max_batch_size and batch * 2 * steps_per_epoch <= n_pairs:
        batch *= 2
    return batch, float(lr) * (batch / batch_size) ** 0.5


def carve_validation(
    seen: sp.csr_matrix, n_rows: int, seed: int
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Hold out one training item of each of ``n_rows`` random users who have >= 2.

    Returns (seen without the held-out cells, users (V,), items (V,)) for early stopping."""
    rng = np.random.default_rng([seed, 7])
    counts = np.diff(seen.indptr)
    pool = np.flatnonzero(counts >= 2)
    users = np.sort(rng.choice(pool, min(n_rows, len(pool)), replace=False))
    pos = seen.indptr[users] + rng.integers(0, counts[users])  # (V,) positions in seen.data
    items = seen.indices[pos].astype(np.int64)
    keep = np.ones(seen.nnz, dtype=bool)
    keep[pos] = False
    rows = np.repeat(np.arange(seen.shape[0]), counts)[keep]
    train = sp.csr_matrix(
        (seen.data[keep], (rows, seen.indices[keep])), shape=seen.shape, dtype=seen.dtype
    )
    return train, users.astype(np.int64), items


def early_stopping_split(
    model: TorchRetrievalModel, patience: int
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """(the seen matrix to train on, the Trainer's early-stopping settings) for a model
    fitting with ``patience`` (0: off): validation rows from ``fit(valid=...)``, else one
    training item of each of min(HELD_OUT_ROWS, pairs / 50) users carved out of
    ``model.seen_`` (``carve_validation``), set as the model's per-epoch validation. Logs
    under 50 * VALID_ROWS = 100,000 pairs train all epochs unless ``fit`` got validation rows: on
    ML-100K's validation split (~35k pairs) stopping on the ~700 cells it could spare
    cost LightGCN 7.5% of its validation Recall@20 (docs/BENCHMARKS.md, "Defaults across
    dataset sizes")."""
    seen = model.seen_
    if patience <= 0:
        return seen, {}
    if getattr(model, "_epoch_valid", None) is None:
        n_rows = min(HELD_OUT_ROWS, seen.nnz // 50)
        if n_rows < VALID_ROWS:  # too few cells to stop on reliably: train all epochs
            return seen, {}
        seen, users, items = carve_validation(seen, n_rows, model.seed)
        model._epoch_valid = Interactions(
            pd.DataFrame(
                {"user": model.user_vocab_.ids(users), "item": model.item_vocab_.ids(items)}
            )
        )
        log.info("%s: %d training cells held out for early stopping", type(model).__name__, n_rows)
    return seen, {"patience": int(patience), "monitor": "recall@10"}


def history_without_held_out(
    history: np.ndarray, seen: sp.csr_matrix, train: sp.csr_matrix
) -> np.ndarray:
    """The (n_users, L) history matrix without the cells ``early_stopping_split`` held out
    (in ``seen``, not in ``train``; one per user), so that the model is not trained on its
    own early-stopping targets; ``history`` itself when nothing was held out."""
    if train is seen:
        return history
    held = seen - train  # (U, I): the held-out cells
    rows = np.flatnonzero(np.diff(held.indptr))
    out = history.copy()
    out[rows] = drop_targets(history[rows], held.indices[held.indptr[rows]])
    return out
