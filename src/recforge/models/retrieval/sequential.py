"""Shared plumbing of the next-item models (SASRec, GRU4Rec, BERT4Rec): the sequences, the
next-item losses, length-bucketed batches, validation on the next item, and scoring from
a stored or request-time history.

A subclass builds an ``nn.Module`` with

* ``hidden(seqs) -> (B, L, D)``: a vector per position of a padded (B, L) array of item
  index + 1 (0 = padding), laid out as ``align`` says (``recforge.data.sequences``);
* ``item_table() -> (n_items, D)``: the output item vectors (score = hidden · item);

and says which positions it trains on (``_training_targets``) and how a history becomes a
query vector (``_query``). After training ``user_factors_`` holds each training user's
query vector from the stored history and ``item_factors_`` the item table, so
``recommend``, ``similar_items``, saving and Faiss work as for any embedding model, and
``score_history`` runs the network on a history given at request time.

Losses (``loss``), on the hidden vector h of a position and its target item:

* ``"ce"``: full softmax cross-entropy over the whole catalogue (``h @ E.T``);
* ``"sampled_softmax"``: N negatives shared by the batch, drawn with probability
  q ∝ count**alpha, logits corrected by ``- log q`` (``recforge.losses.sampled_softmax``);
* ``"bce"``: one uniform negative per position that the user never interacted with, and
  ``-log σ(s_pos) - log σ(-s_neg)`` (the original SASRec objective);
* ``"auto"`` (default): ``"ce"`` while the catalogue has at most ``FULL_SOFTMAX_MAX_ITEMS``
  items (the logits of a batch stay small), else ``"sampled_softmax"``.

With ``fit(train, valid=...)`` (each user's next item after ``train``), the model is scored
every epoch on it (NDCG@10 over the whole catalogue, training items excluded) and keeps
the best epoch's weights; ``patience`` epochs without improvement stop training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recforge import losses as L
from recforge.data.augment import two_views
from recforge.data.batching import PairSampler, PopularitySampler, uniform_negatives
from recforge.data.interactions import Interactions
from recforge.data.sequences import pad_sequences, sequence_lengths, sequence_matrix
from recforge.exceptions import ConfigError, DataError, NotFittedError
from recforge.models.retrieval.torch_base import EpochBatches, TorchRetrievalModel
from recforge.topk import rows_per_batch
from recforge.train.trainer import Trainer

log = logging.getLogger(__name__)

LOSSES = ("auto", "ce", "sampled_softmax", "bce")
FULL_SOFTMAX_MAX_ITEMS = 100_000  # "auto" switches to sampled softmax above this
FINAL_PHASES_SHARE = 0.2  # of time_limit_s kept for the phases after the first
WEIGHTINGS = ("batch", "target")
QUERY_BATCH_TOKENS = 8192  # positions per batch when computing query vectors
DEFAULT_LABEL_SMOOTHING = 0.1  # label_smoothing=None with the full softmax


def resolve_smoothing(label_smoothing: float | None, loss: str) -> float:
    """The label smoothing trained for the resolved ``loss``: None = the default with the
    full softmax and none with the sampled losses, else the value given."""
    if label_smoothing is None:
        return DEFAULT_LABEL_SMOOTHING if loss == "ce" else 0.0
    return float(label_smoothing)


def resolve_loss(loss: str, n_items: int) -> str:
    """The loss actually trained: ``loss``, with "auto" resolved by catalogue size."""
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r}; choose one of {LOSSES}.")
    if loss == "auto":
        return "ce" if n_items <= FULL_SOFTMAX_MAX_ITEMS else "sampled_softmax"
    return loss


def length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (random within a length, random
    batch order), so that trimming a batch to its longest row wastes little. Rows of length
    0 are left out."""
    rows = np.flatnonzero(lengths > 0)
    order = rows[np.lexsort((rng.random(len(rows)), lengths[rows]))]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def trim(seqs: np.ndarray, align: str) -> np.ndarray:
    """Drop the columns that are padding in every row of (B, L)."""
    width = max(1, int(sequence_lengths(seqs).max()))
    return seqs[:, -width:] if align == "right" else seqs[:, :width]


def next_item_loss(
    loss: str,
    h: torch.Tensor,
    target: torch.Tensor,
    table: torch.Tensor,
    negatives: dict[str, torch.Tensor],
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Loss of hidden vectors h (N, D) for target items (N,) (internal indices) against
    the item table (n_items, D). ``negatives``: ``neg`` (K,) + ``log_q_neg`` (K,) +
    ``log_q_pos`` (N,) for sampled_softmax, ``neg`` (N,) for bce (see ``make_negatives``).
    ``label_smoothing`` (ce only): that share of the target mass spread over every item."""
    if loss == "ce":
        return F.cross_entropy(h @ table.T, target, label_smoothing=label_smoothing)
    pos = table[target]  # (N, D)
    if loss == "bce":
        s_pos = (h * pos).sum(-1)  # (N,)
        s_neg = (h * table[negatives["neg"]]).sum(-1)  # (N,)
        return -(F.logsigmoid(s_pos) + F.logsigmoid(-s_neg)).mean()
    neg_ids = negatives["neg"]
    return L.sampled_softmax(
        h,
        pos,
        table[neg_ids],
        log_q_pos=negatives["log_q_pos"],
        log_q_neg=negatives["log_q_neg"],
        pos_ids=target,
        neg_ids=neg_ids,
    )


class SequentialRecommender(TorchRetrievalModel):
    """Base of the next-item models. Shared hyperparameters (keyword-only):

    embedding_dim: width D of item embeddings and hidden states.
    max_len: most recent items of a history the network reads.
    loss: "auto" | "ce" | "sampled_softmax" | "bce" (see the module docstring).
    n_negatives: negatives per batch for sampled_softmax.
    alpha: popularity exponent of the sampled-softmax sampler (0 = uniform).
    epochs, batch_size (sequences per step), lr, optimizer, weight_decay, clip_norm, seed,
        num_threads, progress: training (see ``TrainConfig``).
    patience: with ``fit(..., valid=...)``, epochs without a better validation NDCG@10
        before stopping and going back to the best epoch (0 = no early stopping, the last
        epoch is kept).
    cl_weight: weight of the CL4SRec contrastive term added to the next-item loss: two
        augmented views of each training history (``recforge.data.augment``: crop, mask,
        reorder) should give close query vectors, InfoNCE with in-batch negatives at
        ``cl_temperature`` (0 = off, the default).
    label_smoothing: with the full softmax ("ce"), the share of each target's probability
        spread evenly over the catalogue (0 = off; > 0 is an error with the sampled losses;
        None = ``DEFAULT_LABEL_SMOOTHING`` with the full softmax, 0 with the others).
    weighting: how the loss of a batch is averaged. "batch": the mean over the batch's
        targets, so every batch weighs the same; batches group sequences of similar length,
        so a target of a short history weighs more than one of a long history. "target":
        the batch's summed loss over the epoch's mean number of targets per batch, so every
        training target weighs the same (as with one row per prefix, shuffled, in the
        reference codes) at the same overall step size. "target" is for the models that
        train on every next item (SASRec, GRU4Rec).
    time_limit_s: stop after the first epoch that ends past this many seconds of training
        (every phase together, counted from the start of the first, which ends by 80% of
        it when there are more; every phase runs at least one epoch, so that BERT4Rec's
        final-position fine-tuning always happens; None = no limit), keeping the best
        validated epoch.
    """

    supports_history: ClassVar[bool] = True
    align: ClassVar[str] = "right"  # layout of the padded sequences the module reads

    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 200, "batch_size": 128, "lr": 1e-3}

    def __init__(
        self,
        *,
        max_len: int = 50,
        loss: str = "auto",
        n_negatives: int = 512,
        alpha: float = 0.75,
        clip_norm: float | None = 5.0,
        patience: int = 10,
        time_limit_s: float | None = None,
        cl_weight: float = 0.0,
        cl_temperature: float = 1.0,
        label_smoothing: float | None = 0.0,
        weighting: str = "batch",
        **shared: Any,
    ) -> None:
        super().__init__(**(self.train_defaults | shared))
        self.weighting = weighting
        self.label_smoothing = label_smoothing
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.max_len = max_len
        self.loss = loss
        self.n_negatives = n_negatives
        self.alpha = alpha
        self.clip_norm = clip_norm
        self.patience = patience
        self.time_limit_s = time_limit_s

    # ------------------------------------------------------------------ to implement
    def _build_module(self) -> nn.Module:
        """The network for ``self.n_items`` items (see the module docstring)."""
        raise NotImplementedError

    _min_length: ClassVar[int] = 2  # training sequences shorter than this are skipped
    # "target" counts one target per next item (length - 1 per row): models that train on
    # other positions (BERT4Rec's masks) offer "batch" only
    _weightings: ClassVar[tuple[str, ...]] = WEIGHTINGS

    def _phases(self) -> list[int]:
        """Epochs of each training phase (``self._phase`` tells ``_training_targets``)."""
        return [int(self.epochs)]

    def _training_targets(
        self, seqs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """From a batch of training sequences (B, W) in ``align`` layout (the most recent
        ``max_len + 1`` items, trimmed to the longest row): the network input (B, L') and
        the target per position (B, L') as item index + 1, 0 = no loss there. The default
        is next-item prediction at every position."""
        inp, tgt = seqs[:, :-1], seqs[:, 1:]
        return inp, np.where(inp > 0, tgt, 0)

    def _training_rows(
        self, interactions: Interactions
    ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, np.ndarray]:
        """The training rows: a function from row indices to their sequences (B, W) in
        ``align`` layout, each row's length (R,) and its user (R,). The default is one row
        per user, its most recent ``max_len + 1`` items."""
        train = sequence_matrix(
            interactions, self.user_vocab_, self.item_vocab_, int(self.max_len) + 1, self.align
        )
        return train.__getitem__, sequence_lengths(train), np.arange(len(train))

    def _targets_last_only(self) -> bool:
        """True when ``_training_targets`` puts a target in the last column only (the loss
        then runs the network with ``hidden(..., last_only=True)``)."""
        return False

    def _query(self, module: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
        """Query vectors (B, D) from histories (B, W) in ``align`` layout (W <= max_len,
        wider than the longest history)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fit
    def fit(self, interactions: Interactions, valid: Interactions | None = None):  # type: ignore[override]
        """Learn from ``interactions``; with ``valid`` (held-out next items of the same
        users) keep the epoch with the best validation NDCG@10. Returns self."""
        self._valid_log = valid
        try:
            return super().fit(interactions)
        finally:
            del self._valid_log

    def _fit(self, interactions: Interactions) -> None:
        self._check_common()
        if not isinstance(self.max_len, int | np.integer) or self.max_len < 2:
            raise ConfigError(
                f"{type(self).__name__}: max_len must be an integer >= 2, got {self.max_len!r}."
            )
        if float(self.cl_weight) < 0 or float(self.cl_temperature) <= 0:
            raise ConfigError(
                f"{type(self).__name__}: need cl_weight >= 0 and cl_temperature > 0, got "
                f"{self.cl_weight!r} and {self.cl_temperature!r}."
            )
        if self.weighting not in self._weightings:
            raise ConfigError(
                f"{type(self).__name__}: weighting={self.weighting!r}; choose one of "
                f"{self._weightings}."
            )
        if self.time_limit_s is not None and not float(self.time_limit_s) > 0:
            raise ConfigError(
                f"{type(self).__name__}: time_limit_s must be > 0 seconds or None (no limit), "
                f"got {self.time_limit_s!r}."
            )
        loss = resolve_loss(self.loss, self.n_items)
        smoothing = resolve_smoothing(self.label_smoothing, loss)
        if not 0.0 <= smoothing < 1.0 or (smoothing > 0 and loss != "ce"):
            raise ConfigError(
                f"{type(self).__name__}: label_smoothing must be in [0, 1) and applies to the "
                f"full softmax only (loss='ce'); got {self.label_smoothing!r} with loss={loss!r}."
            )
        torch.manual_seed(self.seed)
        self.sequences_ = sequence_matrix(
            interactions, self.user_vocab_, self.item_vocab_, int(self.max_len), self.align
        )
        get_rows, lengths, row_users = self._training_rows(interactions)
        if not (lengths >= 2).any():
            raise DataError(
                f"{type(self).__name__}: no user has two or more interactions, so there is no "
                f"next item to learn; sequential models need histories."
            )
        module = self._build_module()
        sampler = PairSampler(self.seen_)
        popularity = PopularitySampler(sampler.item_counts(), float(self.alpha))

        lengths = np.where(lengths >= self._min_length, lengths, 0)
        last_only = self._targets_last_only()
        per_batch = 1.0  # "target" weighting: the epoch's mean targets per batch
        if self.weighting == "target":
            rows = lengths[lengths > 0]
            n_targets = len(rows) if last_only else int((rows - 1).sum())
            n_batches = -(-len(rows) // int(self.batch_size))
            per_batch = max(1.0, n_targets / max(1, n_batches))

        def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            tgt = batch["target"][:, -1:] if last_only else batch["target"]
            where = tgt > 0  # (B, L') or (B, 1)
            h = m.hidden(batch["input"], last_only=True) if last_only else m.hidden(batch["input"])
            h, target = h[where], tgt[where] - 1  # (N, D), (N,)
            out = next_item_loss(loss, h, target, m.item_table(), batch, smoothing)
            if self.weighting == "target":  # the batch's sum over the epoch's mean count
                out = out * (target.numel() / per_batch)
            if "view1" in batch:  # CL4SRec: two views of each history, in-batch InfoNCE
                q1, q2 = self._query(m, batch["view1"]), self._query(m, batch["view2"])
                out = out + float(self.cl_weight) * L.infonce(q1, q2, float(self.cl_temperature))
            return out

        valid_fn = self._valid_fn(self._valid_log)
        self.phase_histories_: list = []
        best: tuple[float, dict[str, torch.Tensor]] | None = None
        started = time.perf_counter()
        for phase, epochs in enumerate(self._phases()):
            self._phase = phase
            left = None
            if self.time_limit_s is not None:  # > 0, checked above
                limit, spent = float(self.time_limit_s), time.perf_counter() - started
                if phase == 0 and len(self._phases()) > 1:  # keep a share for the later ones
                    limit *= 1.0 - FINAL_PHASES_SHARE
                left = limit - spent
                if left <= 0:  # every phase gets at least its first epoch
                    log.info(
                        "%s: phase %d past time_limit_s, one epoch", type(self).__name__, phase
                    )
                    left = 1e-9

            def batches(epoch: int, phase: int = phase) -> EpochBatches:
                rng = np.random.default_rng([int(self.seed), phase, epoch])
                groups = length_batches(lengths, int(self.batch_size), rng)

                def make() -> Iterator[dict[str, torch.Tensor]]:
                    for rows in groups:
                        inp, tgt = self._training_targets(trim(get_rows(rows), self.align), rng)
                        b = {"input": torch.from_numpy(inp), "target": torch.from_numpy(tgt)}
                        users = row_users[rows]
                        b.update(self._negatives(loss, users, tgt, sampler, popularity, rng))
                        if self.cl_weight > 0:
                            v1, v2 = two_views(inp, self.align, rng)
                            b["view1"], b["view2"] = torch.from_numpy(v1), torch.from_numpy(v2)
                        yield b

                return EpochBatches(len(groups), make)

            self._train(
                module,
                loss_fn,
                batches,
                valid_fn=valid_fn,
                epochs=epochs,
                patience=int(self.patience) if valid_fn is not None else 0,
                monitor="ndcg@10",
                mode="max",
                clip_norm=self.clip_norm,
                time_limit_s=left,
            )
            self.phase_histories_.append(self.train_history_)
            value = self.train_history_.best_value
            if value is not None and (best is None or value > best[0]):
                best = (value, {k: v.clone() for k, v in module.state_dict().items()})
        if best is not None and len(self.phase_histories_) > 1:
            module.load_state_dict(best[1])  # a later phase that did not help is undone
        self.loss_ = loss
        self.module_ = module
        self._materialise()

    def _train(self, module, loss_fn, batches, valid_fn=None, **config):  # type: ignore[no-untyped-def]
        history = Trainer(self._train_config(**config)).fit(module, loss_fn, batches, valid_fn)
        self.train_history_ = history
        return history

    def _negatives(
        self,
        loss: str,
        users: np.ndarray,
        target: np.ndarray,
        sampler: PairSampler,
        popularity: PopularitySampler,
        rng: np.random.Generator,
    ) -> dict[str, torch.Tensor]:
        """The negatives ``next_item_loss`` needs for a batch (the user of each row (B,),
        target (B, L'))."""
        where = target > 0
        if loss == "bce":  # one per position, among the items the user never touched
            users = np.broadcast_to(users[:, None], target.shape)[where]  # (N,)
            return {"neg": torch.from_numpy(uniform_negatives(sampler, users, 1, rng)[:, 0])}
        if loss == "sampled_softmax":  # K shared by the batch, log-Q corrected
            neg = popularity.sample(int(self.n_negatives), rng)
            return {
                "neg": torch.from_numpy(neg),
                "log_q_neg": torch.from_numpy(popularity.log_q[neg]),
                "log_q_pos": torch.from_numpy(popularity.log_q[target[where] - 1]),
            }
        return {}

    # ------------------------------------------------------------------ validation
    def _valid_fn(self, valid: Interactions | None):  # type: ignore[no-untyped-def]
        if valid is None:
            return None
        u = self.user_vocab_.index(valid.frame["user"].to_numpy(), unknown="mask")
        i = self.item_vocab_.index(valid.frame["item"].to_numpy(), unknown="mask")
        keep = (u >= 0) & (i >= 0)
        if not keep.any():
            raise DataError(
                f"{type(self).__name__}.fit: no validation row has a training user and item."
            )
        users, items = u[keep], i[keep]

        def valid_fn(module: nn.Module) -> dict[str, float]:
            return rank_metrics(self._target_ranks(module, users, items), 10)

        return valid_fn

    def _target_ranks(self, module: nn.Module, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """0-based rank of items[b] among all items for users[b], from the stored training
        histories, training items excluded: (B,) int64."""
        q = self._queries(module, self.sequences_[users])  # (B, D)
        return target_ranks(q, module.item_table(), items, self.seen_, users)

    # ------------------------------------------------------------------ scoring
    def _queries(
        self, module: nn.Module, seqs: np.ndarray, batch_tokens: int = QUERY_BATCH_TOKENS
    ) -> torch.Tensor:
        """Query vectors (N, D) for padded histories (N, max_len). Rows are grouped by
        length, each group trimmed to its length plus one padding column (the same result
        as the full width: padding is masked and positions count from the newest item) and
        cut into batches of about ``batch_tokens`` positions, so that no position of a
        batch is padding beyond that one column."""
        lengths = sequence_lengths(seqs)
        order = np.argsort(lengths, kind="stable")
        widths = np.minimum(lengths[order] + 1, int(self.max_len))  # sorted
        out = torch.empty(len(seqs), int(self.embedding_dim))
        starts = np.flatnonzero(np.r_[True, widths[1:] != widths[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            width = int(widths[start])
            step = max(1, batch_tokens // width)
            for s in range(int(start), int(end), step):
                rows = order[s : min(s + step, int(end))]
                part = seqs[rows][:, -width:] if self.align == "right" else seqs[rows][:, :width]
                out[torch.from_numpy(rows)] = self._query(module, torch.from_numpy(part))
        return out

    def query_vectors(self, seqs: np.ndarray) -> np.ndarray:
        """Query vectors (N, D) float32 for padded histories (N, max_len) of item index + 1
        (``align`` layout, as ``pad_histories`` makes them)."""
        if self.module_ is None:
            raise NotFittedError(self, "query_vectors")
        self.module_.eval()
        with torch.inference_mode():
            return self._queries(self.module_, seqs).numpy().astype(np.float32, copy=False)

    def pad_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        """Internal item-index histories (oldest first) -> padded (N, max_len) input."""
        return pad_sequences(
            [np.asarray(h, dtype=np.int64) + 1 for h in histories], int(self.max_len), self.align
        )

    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        q = self.query_vectors(self.pad_histories([item_idx]))  # (1, D)
        return (q @ self.item_factors_.T)[0]

    def _materialise(self) -> None:
        assert self.module_ is not None
        self.user_factors_ = self.query_vectors(self.sequences_)
        with torch.no_grad():
            self.item_factors_ = self.module_.item_table().numpy().astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._save_state()
        arrays.update(self._module_arrays())
        arrays["sequences"] = self.sequences_
        state["loss"] = self.loss_
        return arrays, state

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        super()._load_state(arrays, state)
        self.sequences_ = arrays["sequences"]
        self.loss_ = state["loss"]
        module = self._build_module()
        module.load_state_dict(self._module_state(arrays))
        module.eval()
        self.module_ = module


def right_positions(width: int, max_len: int, device: torch.device) -> torch.Tensor:
    """Positions (width,) of the columns of a right-aligned batch trimmed to ``width``: the
    last column is ``max_len - 1`` ("now"), whatever the trimming."""
    return torch.arange(max_len - width, max_len, device=device)


def target_ranks(
    queries: torch.Tensor,
    table: torch.Tensor,
    items: np.ndarray,
    seen: sp.csr_matrix,
    users: np.ndarray,
    max_rows: int = 256,
) -> np.ndarray:
    """0-based rank of ``items[b]`` among every item for ``queries[b]``: (B,) int64.

    queries (B, D) against table (n_items, D), scores by one matmul per block of rows (at
    most ``max_rows``, fewer when the block would pass ``SCORE_MEMORY_BUDGET``); the items
    of ``seen[users[b]]`` (a users x items CSR) get -inf, scattered on index tensors; the
    rank is the count of items scoring strictly above the target, no sort. The target's
    score is read before masking, so a target that is also in the history still ranks."""
    items = np.asarray(items, dtype=np.int64)
    users = np.asarray(users)
    ranks = np.empty(len(users), dtype=np.int64)
    step = rows_per_batch(table.shape[0], max_rows)
    with torch.inference_mode():
        for s in range(0, len(users), step):
            sl = slice(s, s + step)
            scores = (queries[sl] @ table.T).numpy()  # (b, n_items), a view, no copy
            target = np.take_along_axis(scores, items[sl, None], 1).copy()  # (b, 1)
            sub = seen[users[sl]]
            scores[np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr)), sub.indices] = -np.inf
            ranks[sl] = (scores > target).sum(1)  # NumPy's count is ~3x torch's bool sum
    return ranks


def rank_metrics(ranks: np.ndarray, k: int) -> dict[str, float]:
    """HR@k and NDCG@k of one relevant item per user from its 0-based ranks (N,)."""
    hit = ranks < k
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float((hit / np.log2(ranks + 2.0)).mean()),
    }
