"""``TorchRanker``: everything a torch CTR model shares, so a model file only builds its
``nn.Module``.

A model subclasses ``TorchRanker`` and

* declares ITS OWN keyword-only hyperparameters in ``__init__``, takes the shared ones
  as ``**shared`` and passes them to ``super().__init__(**shared)``::

      @register("deepfm")
      class DeepFM(TorchRanker):
          def __init__(self, *, hidden=(400, 400, 400), dropout=0.0, **shared):
              super().__init__(**shared)
              self.hidden, self.dropout = hidden, dropout

          def build_module(self, fields):
              return DeepFMModule(fields, dim=self.embedding_dim, ...)

  ``param_names()`` (``BaseModel``) is the model's own names followed by ``TorchRanker``'s, so
  ``get_params()``, the registry's unknown-parameter check and save/load see all of them;
  a misspelt keyword is still a ``TypeError`` (``TorchRanker.__init__`` has no ``**``).
* implements ``build_module(fields) -> nn.Module`` whose ``forward(batch) -> (B,) logits``
  (``batch`` as made by ``recforge.nn.inputs``).

``TorchRanker`` does the rest: encoding (``FeatureEncoder``), optional re-sampling
(``recforge.data.imbalance``), tensor batching, training through ``recforge.train.Trainer``
(validation AUC/logloss per epoch when ``valid`` is given), batched ``predict_proba`` and
save/load (state_dict as safetensors arrays, encoder and ``train_history_`` -- loss,
validation metrics and learning rate per epoch -- as JSON).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from recforge import losses
from recforge.data.features import EncodedFeatures, FeatureEncoder, Field
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import Ranker
from recforge.nn.embedding import (
    NUMERIC_MODES,  # noqa: F401  (the rankers import it here)
    FeatureEmbedding,
    LinearEmbedding,
)
from recforge.nn.inputs import Batch, take, to_tensors
from recforge.threads import ensure_torch_threads, set_torch_threads
from recforge.train import History, TrainConfig, Trainer, seed_everything
from recforge.train.trainer import history_from_json, history_to_json

log = logging.getLogger(__name__)

LOSSES = ("bce", "weighted_bce", "focal")
LIST_LOSSES = ("none", "softmax", "listnet", "lambdarank")
SAMPLING = ("none", "over", "under", "negative_downsample", "smote", "adasyn")


class TorchRanker(Ranker):
    """Base class of torch CTR models. Shared hyperparameters (keyword-only):

    embedding_dim: field embedding size.
    epochs, batch_size, lr, optimizer, weight_decay, l2, schedule, warmup_steps, clip_norm,
        patience, monitor, seed, checkpoint_dir: see ``TrainConfig``.
    num_threads: torch threads while training (None: the ``recforge.threads`` default).
    progress: a progress bar per epoch (None: only in an interactive terminal).
    sparse: sparse gradients for the embedding table (SparseAdam/Adagrad on touched rows).
    loss: "bce", "weighted_bce" (positives weighted by ``pos_weight``) or "focal"
        (``focal_gamma``, ``focal_alpha``).
    sampling: "none", "over", "under" (random over/under-sampling to a minority:majority
        ratio of ``sampling_rate``), "negative_downsample" (keep each negative with
        probability ``sampling_rate``; predictions are re-calibrated), "smote", "adasyn".
    list_loss: "none" (pointwise: ``loss`` per row) or a listwise loss over each list of
        rows sharing ``list_group`` (e.g. one user's recall candidates): "softmax" (cross-
        entropy of softmax(scores) against the labels normalised to sum 1), "listnet"
        (``losses.listnet``) or "lambdarank" (``losses.lambdarank`` at k=10). Batches then
        hold whole lists (about ``batch_size`` rows); lists without a positive are skipped.
    list_group: the column naming each row's list when ``list_loss`` is set.
    list_bce_weight: weight of the pointwise ``loss`` added to the listwise one. A listwise
        loss does not change when a list's scores shift together, so without an anchor the
        logits drift until ``predict_proba`` saturates at 0/1 and ties; a small pointwise
        term keeps them on a probability scale (0 = the pure listwise loss).
    numeric: how numeric columns enter the network: "field" (each is an embedded field,
        its vector scaled by the standardised value, so the interaction layers -- FM,
        CIN, attention, crosses, products -- see it like a categorical field) or "dense"
        (the standardised values go straight into the deep part's input and the
        first-order term; the interaction layers see the categorical and multi fields
        only, as in DeepCTR-Torch). None: the model's default (``numeric_default``); a
        model that supports only "field" (``numeric_modes``) rejects "dense".
    min_count, max_len, encoder_options: passed to ``FeatureEncoder`` (encoder_options is a
        dict of its other keyword arguments, e.g. ``{"bucketize": ["price"]}``).
    """

    smoke_params: ClassVar[dict[str, Any]] = {"embedding_dim": 4, "epochs": 2, "batch_size": 64}
    _shared: ClassVar[tuple[str, ...]] = ()  # filled below from __init__'s signature
    numeric_modes: ClassVar[tuple[str, ...]] = ("field",)  # the ``numeric`` values it takes
    numeric_default: ClassVar[str] = "field"  # what numeric=None means for this model

    def __init__(
        self,
        *,
        embedding_dim: int = 16,
        epochs: int = 5,
        batch_size: int = 1024,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        l2: float = 0.0,
        schedule: str = "constant",
        warmup_steps: int = 0,
        clip_norm: float | None = None,
        patience: int = 0,
        monitor: str = "auc",
        seed: int = 0,
        sparse: bool = False,
        loss: str = "bce",
        pos_weight: float = 1.0,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        sampling: str = "none",
        sampling_rate: float = 1.0,
        list_loss: str = "none",
        list_group: str = "user",
        list_bce_weight: float = 0.1,
        numeric: str | None = None,
        min_count: int = 1,
        max_len: int = 8,
        encoder_options: dict[str, Any] | None = None,
        num_threads: int | None = None,
        progress: bool | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.l2 = l2
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.clip_norm = clip_norm
        self.patience = patience
        self.monitor = monitor
        self.seed = seed
        self.sparse = sparse
        self.loss = loss
        self.pos_weight = pos_weight
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.sampling = sampling
        self.sampling_rate = sampling_rate
        self.list_loss = list_loss
        self.list_group = list_group
        self.list_bce_weight = list_bce_weight
        self.numeric = numeric
        self.min_count = min_count
        self.max_len = max_len
        self.encoder_options = encoder_options
        self.num_threads = num_threads
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir

    # ------------------------------------------------------------------ to implement
    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        """The network: ``forward(batch) -> (B,)`` logits."""
        raise NotImplementedError

    def _init_module(self, module: nn.Module, train: Batch, y: torch.Tensor) -> None:
        """Hook before training (e.g. FNN copies embeddings from a trained FM)."""

    def make_encoder(self, frame: pd.DataFrame) -> FeatureEncoder:
        """The (unfitted) encoder ``fit`` learns the fields of ``frame`` with; models whose
        inputs need more than the defaults (history rankers) override it."""
        return FeatureEncoder(
            min_count=self.min_count, max_len=self.max_len, **(self.encoder_options or {})
        )

    def encode(self, encoder: FeatureEncoder, frame: pd.DataFrame) -> EncodedFeatures:
        """Rows of ``frame`` as arrays (``encoder.transform``; a model may add arrays)."""
        return encoder.transform(frame)

    def training_loss(self, module: nn.Module, x: Batch, y: torch.Tensor) -> torch.Tensor:
        """The loss of one training batch (the CTR loss; DIEN adds its auxiliary loss)."""
        return self.loss_value(module(x), y)

    # ------------------------------------------------------------------ helpers for models
    def feature_embedding(
        self,
        fields: Sequence[Field],
        dim: int | None = None,
        *,
        linear: bool = False,
        init_std: float = 1e-2,
    ) -> FeatureEmbedding:
        """The shared field embedding with this model's size and sparsity; ``linear=True``
        also holds the first-order weights as one extra column of the same table
        (``FeatureEmbedding.forward_with_linear``: both terms from one lookup). Numeric
        fields are embedded or kept dense as ``numeric`` says; ``init_std``: the std of
        the embeddings' normal initialisation."""
        return FeatureEmbedding(
            fields,
            dim or self.embedding_dim,
            sparse=self.sparse,
            linear=linear,
            numeric=self.numeric_mode(),
            init_std=float(init_std),
        )

    def numeric_mode(self) -> str:
        """The resolved ``numeric`` setting: the fitted/loaded model's, else the
        parameter, else the model's default."""
        fitted = getattr(self, "numeric_", None)
        return fitted or self.numeric or self.numeric_default

    def linear_embedding(self, fields: Sequence[Field]) -> LinearEmbedding:
        return LinearEmbedding(fields, sparse=self.sparse)

    def train_config(self, **overrides: Any) -> TrainConfig:
        cfg = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "weight_decay": self.weight_decay,
            "l2": self.l2,
            "schedule": self.schedule,
            "warmup_steps": self.warmup_steps,
            "clip_norm": self.clip_norm,
            "patience": self.patience,
            "monitor": self.monitor,
            "mode": "min" if self.monitor == "logloss" else "max",
            "seed": self.seed,
            "num_threads": self.num_threads,
            "progress": self.progress,
            "checkpoint_dir": self.checkpoint_dir,
        }
        cfg.update(overrides)
        return TrainConfig(**cfg)

    def loss_value(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "bce":
            return losses.bce_with_logits(logits, y)
        if self.loss == "weighted_bce":
            return losses.weighted_bce(logits, y, self.pos_weight)
        if self.loss == "focal":
            return losses.focal(logits, y, self.focal_gamma, self.focal_alpha)
        raise ConfigError(f"{type(self).__name__}: loss={self.loss!r}; choose one of {LOSSES}.")

    def list_loss_value(
        self, logits: torch.Tensor, y: torch.Tensor, seg: torch.Tensor
    ) -> torch.Tensor:
        """The listwise loss of a batch of whole lists: logits, y (B,), seg (B,) the list of
        each row (0..G-1, rows of a list contiguous)."""
        n_lists = int(seg[-1]) + 1
        starts = torch.searchsorted(seg, torch.arange(n_lists))  # (G,) first row of each list
        pos = torch.arange(len(seg)) - starts[seg]  # (B,) place inside its list
        width = int(pos.max()) + 1
        scores = logits.new_zeros(n_lists, width)
        labels = y.new_zeros(n_lists, width)
        mask = torch.zeros(n_lists, width, dtype=torch.bool)
        scores[seg, pos], labels[seg, pos], mask[seg, pos] = logits, y, True  # (G, L)
        if self.list_loss == "softmax":
            logp = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            target = labels / labels.sum(1, keepdim=True).clamp_min(1e-12)
            return -(target * logp.masked_fill(~mask, 0.0)).sum(1).mean()
        if self.list_loss == "listnet":
            return losses.listnet(scores, labels, mask)
        return losses.lambdarank(scores, labels, mask, k=10)

    # ------------------------------------------------------------------ fit
    def fit(
        self, frame: pd.DataFrame, label: str = "label", valid: pd.DataFrame | None = None
    ) -> TorchRanker:
        """Encode ``frame``, train on it (validating on ``valid`` each epoch); returns self.

        ``frame`` may also be a ``recforge.data.stream.ParquetSource`` (data larger than
        memory): the encoder is fitted in one streaming pass and every epoch reads the
        Parquet again through the source's bounded shuffle buffer."""
        from recforge.data.stream import ParquetSource

        if isinstance(frame, ParquetSource):
            return self._fit_stream(frame, label, valid)
        self._check_params()
        self.numeric_ = self.numeric or self.numeric_default
        y = _labels(frame, label, "fit")
        encoder = self.make_encoder(frame).fit(frame, label)
        x = self.encode(encoder, frame)
        neg_rate = 1.0
        groups = None
        if self.list_loss != "none":
            if self.list_group not in frame.columns:
                raise DataError(
                    f"{type(self).__name__}.fit: list_loss={self.list_loss!r} groups rows by "
                    f"list_group={self.list_group!r}, which is not a column (columns: "
                    f"{list(frame.columns)}); set list_group to the user/request column.",
                    column=self.list_group,
                )
            if self.sampling != "none":
                raise ConfigError(
                    f"{type(self).__name__}: sampling must be 'none' with a list_loss "
                    f"(re-sampling would break the lists)."
                )
            groups = pd.factorize(frame[self.list_group])[0]
        if self.sampling != "none":
            from recforge.data.imbalance import resample

            x, y, neg_rate = resample(
                x, y, method=self.sampling, rate=self.sampling_rate, seed=self.seed
            )
        valid_data = None
        if valid is not None:
            valid_data = (
                to_tensors(self.encode(encoder, valid)),
                _labels(valid, label, "fit(valid=...)"),
            )
        module, hist = self._train(encoder.fields_, x, y, valid_data, neg_rate, groups)
        self.module_, self.train_history_, self.neg_rate_ = module, hist, neg_rate
        self.n_features_ = len(encoder.fields_)
        self.encoder_ = encoder  # last: marks the model fitted
        return self

    def _fit_stream(self, source: Any, label: str, valid: pd.DataFrame | None) -> TorchRanker:
        """``fit`` on a ParquetSource: one streaming pass fits the encoder, then epochs of
        shuffled chunks, each encoded as it is read (memory: the shuffle buffer)."""
        self._check_params()
        if self.sampling != "none":
            raise ConfigError(
                f"{type(self).__name__}: sampling={self.sampling!r} needs the data in memory; "
                f"train from a DataFrame, or down-sample the Parquet beforehand."
            )
        if self.list_loss != "none":
            raise ConfigError(
                f"{type(self).__name__}: list_loss={self.list_loss!r} needs whole lists in "
                f"memory; train from a DataFrame."
            )
        self.numeric_ = self.numeric or self.numeric_default
        first = next(source.frames())
        encoder = self.make_encoder(first).fit_stream(source.frames(), label)
        valid_data = None
        if valid is not None:
            valid_data = (
                to_tensors(self.encode(encoder, valid)),
                _labels(valid, label, "fit(valid=...)"),
            )
        x0 = to_tensors(self.encode(encoder, first))
        y0 = torch.from_numpy(_labels(first, label, "fit").astype(np.float32))
        batches = _StreamBatches(self, source, encoder, label)
        module, hist = self._train_on(encoder.fields_, batches, x0, y0, valid_data, 1.0)
        self.module_, self.train_history_, self.neg_rate_ = module, hist, 1.0
        self.n_features_ = len(encoder.fields_)
        self.encoder_ = encoder
        return self

    def _train(
        self,
        fields: Sequence[Field],
        x: EncodedFeatures,
        y: np.ndarray,
        valid: tuple[Batch, np.ndarray] | None,
        neg_rate: float,
        groups: np.ndarray | None = None,
    ) -> tuple[nn.Module, History]:
        """Train a new module; ``groups`` (n,) list ids switch to listwise batches."""
        xt = to_tensors(x)
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
        if groups is None:
            batches: Any = _Batches(xt, yt, self.batch_size, self.seed)
        else:
            batches = _ListBatches(xt, yt, self.batch_size, self.seed, groups)
        return self._train_on(fields, batches, xt, yt, valid, neg_rate)

    def _train_on(
        self,
        fields: Sequence[Field],
        batches: Any,
        xt: Batch,
        yt: torch.Tensor,
        valid: tuple[Batch, np.ndarray] | None,
        neg_rate: float,
    ) -> tuple[nn.Module, History]:
        """Build the module (``_init_module`` sees ``xt``/``yt``) and train it on
        ``batches`` (an epoch -> batches callable)."""
        set_torch_threads(self.num_threads)
        seed_everything(self.seed)
        module = self.build_module(fields)
        self._init_module(module, xt, yt)

        def loss_fn(m: nn.Module, b: tuple) -> torch.Tensor:
            if len(b) == 3:  # whole lists: (x, y, list of each row)
                logits = m(b[0])
                loss = self.list_loss_value(logits, b[1], b[2])
                if self.list_bce_weight > 0:
                    loss = loss + self.list_bce_weight * self.loss_value(logits, b[1])
                return loss
            return self.training_loss(m, b[0], b[1])

        valid_fn = None
        if valid is not None:
            vx, vy = valid

            def valid_fn(m: nn.Module) -> dict[str, float]:
                logits = _predict_logits(m, vx, 16384) + np.log(neg_rate)
                return self.valid_metrics(vy, logits)

        hist = Trainer(self.train_config()).fit(module, loss_fn, batches, valid_fn)
        return module, hist

    def valid_metrics(self, y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """Validation metrics per epoch ("auc", "logloss"); multi-task models override."""
        return _binary_metrics(y, logits)

    def _check_params(self) -> None:
        self.check_params()  # types against the annotations
        if self.loss not in LOSSES:
            raise ConfigError(f"{type(self).__name__}: loss={self.loss!r}; choose one of {LOSSES}.")
        if self.list_loss not in LIST_LOSSES:
            raise ConfigError(
                f"{type(self).__name__}: list_loss={self.list_loss!r}; choose one of {LIST_LOSSES}."
            )
        if self.sampling not in SAMPLING:
            raise ConfigError(
                f"{type(self).__name__}: sampling={self.sampling!r}; choose one of {SAMPLING}."
            )
        if self.numeric is not None and self.numeric not in self.numeric_modes:
            raise ConfigError(
                f"{type(self).__name__}: numeric={self.numeric!r}; choose one of "
                f"{self.numeric_modes} (or None for the default, {self.numeric_default!r})."
            )
        if int(self.embedding_dim) < 1:
            raise ConfigError(f"{type(self).__name__}: embedding_dim must be >= 1.")

    # ------------------------------------------------------------------ predict
    def predict_logits(self, frame: pd.DataFrame, batch_size: int = 16384) -> np.ndarray:
        """Calibrated logits per row: (n,) float32."""
        self._check_fitted("predict_logits")
        xt = to_tensors(self.encode(self.encoder_, frame))
        return _predict_logits(self.module_, xt, batch_size) + np.float32(np.log(self.neg_rate_))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Click probability per row (n,). After negative down-sampling with keep rate w the
        network's p' is mapped back to p = p' / (p' + (1 - p') / w)."""
        self._check_fitted("predict_proba")
        z = self.predict_logits(frame)
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    def predict_proba_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """``predict_proba`` of rows already encoded by ``encoder_`` (the serving path: no
        pandas, and torch's thread count is left as the process set it)."""
        self._check_fitted("predict_proba_encoded")
        self.module_.eval()
        z = _predict_logits_batched(self.module_, to_tensors(x), 16384)
        z = z[:, 0] if z.ndim == 2 and z.shape[1] == 1 else z  # (n,), or (n, T) multi-task
        z = z + np.float32(np.log(self.neg_rate_))
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            f"module/{k}": v.detach().cpu().numpy() for k, v in self.module_.state_dict().items()
        }
        state = {
            "encoder": self.encoder_.to_json(),
            "neg_rate": self.neg_rate_,
            "numeric": self.numeric_mode(),
            "train_history": history_to_json(getattr(self, "train_history_", None)),
        }
        return arrays, state

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        encoder = FeatureEncoder.from_json(state["encoder"])
        self.numeric_ = state.get("numeric", "field")  # saved before the option: "field"
        module = self.build_module(encoder.fields_)
        sd = {
            k[len("module/") :]: torch.from_numpy(np.array(v))
            for k, v in arrays.items()
            if k.startswith("module/")
        }
        module.load_state_dict(sd)
        module.eval()
        self.module_, self.neg_rate_ = module, float(state["neg_rate"])
        self.train_history_ = history_from_json(state["train_history"])
        self.n_features_ = len(encoder.fields_)
        self.encoder_ = encoder

    def _schema(self) -> dict[str, Any]:
        return {"fields": [f.name for f in self.encoder_.fields_]}


# ---------------------------------------------------------------------- internals
class _Batches:
    """Shuffled mini-batches for one epoch: a permutation seeded by (seed, epoch), cut into
    slices, rows gathered with index_select. A trailing batch of one row is dropped (batch
    norm cannot train on it)."""

    def __init__(self, x: Batch, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.bs, self.seed = x, y, int(batch_size), int(seed)
        self.n = int(y.shape[0])
        self.epoch = 0
        self.rank, self.size = 0, 1  # data-parallel shard: batches i with i % size == rank

    def __call__(self, epoch: int) -> _Batches:
        self.epoch = epoch
        return self

    def shard(self, rank: int, size: int) -> _Batches:
        """This epoch's batches of rank ``rank`` of ``size`` (``recforge.train.distributed``):
        the same permutation on every rank, batch i to rank i % size, equal counts."""
        self.rank, self.size = int(rank), int(size)
        return self

    def _n_all(self) -> int:
        full, rest = divmod(self.n, self.bs)
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def __len__(self) -> int:
        return self._n_all() // self.size

    def __iter__(self) -> Iterator[tuple[Batch, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        for j in range(len(self)):
            i = j * self.size + self.rank
            idx = perm[i * self.bs : (i + 1) * self.bs]
            yield take(self.x, idx), self.y.index_select(0, idx)


class _StreamBatches:
    """Epochs of mini-batches from a ParquetSource: shuffled chunks encoded as they are read.
    Under data parallelism each rank reads its own row groups and every rank stops after
    the same number of steps (that of the smallest share)."""

    def __init__(
        self, model: TorchRanker, source: Any, encoder: FeatureEncoder, label: str
    ) -> None:
        self.model, self.source, self.encoder, self.label = model, source, encoder, label
        self.bs = int(model.batch_size)
        self.epoch, self.rank, self.size = 0, 0, 1

    def __call__(self, epoch: int) -> _StreamBatches:
        self.epoch = epoch
        return self

    def shard(self, rank: int, size: int) -> _StreamBatches:
        self.rank, self.size = int(rank), int(size)
        return self

    def _steps(self, n: int) -> int:
        buf = self.source.buffer_rows
        per_block = -(-buf // self.bs)
        return (n // buf) * per_block + -(-(n % buf) // self.bs)

    def __len__(self) -> int:
        shares = [self.source.shard(r, self.size).n_rows for r in range(self.size)]
        return self._steps(min(shares))

    def __iter__(self) -> Iterator[tuple[Batch, torch.Tensor]]:
        src = self.source.shard(self.rank, self.size) if self.size > 1 else self.source
        steps, taken = len(self), 0
        for block in src.shuffled(self.epoch):
            x = to_tensors(self.model.encode(self.encoder, block))
            y = torch.from_numpy(_labels(block, self.label, "fit").astype(np.float32))
            for s in range(0, len(block), self.bs):
                if taken >= steps:
                    return
                idx = torch.arange(s, min(s + self.bs, len(block)))
                taken += 1
                yield take(x, idx), y.index_select(0, idx)


class _ListBatches(_Batches):
    """Mini-batches of whole lists for a listwise loss: lists with a positive and at least
    two rows, in an order shuffled by (seed, epoch), packed until a batch holds
    ``batch_size`` rows (a longer list is a batch alone). Yields (x, y, seg), seg (B,) the
    batch-local list index of each row."""

    def __init__(
        self, x: Batch, y: torch.Tensor, batch_size: int, seed: int, groups: np.ndarray
    ) -> None:
        super().__init__(x, y, batch_size, seed)
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        lists = np.split(order, bounds)
        yn = y.numpy()
        self.lists = [g for g in lists if len(g) >= 2 and yn[g].max() > 0]
        if not self.lists:
            raise DataError(
                "listwise training: no list has a positive and two rows; check list_group "
                "and the labels."
            )

    def _cuts(self, perm: np.ndarray) -> list[np.ndarray]:
        cuts, cur, rows = [], [], 0
        for k in perm:
            cur.append(k)
            rows += len(self.lists[k])
            if rows >= self.bs:
                cuts.append(np.asarray(cur))
                cur, rows = [], 0
        if cur:
            cuts.append(np.asarray(cur))
        return cuts

    def _n_all(self) -> int:
        # the count in list order; an epoch's shuffled packing may differ by a batch or
        # two, so __iter__ wraps around its own cuts (every rank yields the same count)
        return len(self._cuts(np.arange(len(self.lists))))

    def __iter__(self) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed * 1_000_003 + self.epoch)
        cuts = self._cuts(rng.permutation(len(self.lists)))
        for j in range(len(self)):
            chosen = cuts[(j * self.size + self.rank) % len(cuts)]
            idx = np.concatenate([self.lists[k] for k in chosen])
            seg = np.repeat(np.arange(len(chosen)), [len(self.lists[k]) for k in chosen])
            t = torch.from_numpy(idx)
            yield take(self.x, t), self.y.index_select(0, t), torch.from_numpy(seg)


def _predict_logits(module: nn.Module, x: Batch, batch_size: int) -> np.ndarray:
    # torch's thread count is process-wide: set once (by fit, or here on a loaded model),
    # never switched per call, so concurrent predictions in a threaded server are safe
    ensure_torch_threads()
    module.eval()
    return _predict_logits_batched(module, x, batch_size)


def _predict_logits_batched(module: nn.Module, x: Batch, batch_size: int) -> np.ndarray:
    n = int(x["categorical"].shape[0])
    out = np.empty(n, dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            idx = torch.arange(s, min(n, s + batch_size))
            z = module(take(x, idx)).float().numpy()  # (B,) or, multi-task, (B, T)
            if z.ndim > 1 and out.ndim == 1:
                out = np.empty((n, *z.shape[1:]), dtype=np.float32)
            out[s : s + len(idx)] = z
    return out


def _binary_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    z = logits.astype(np.float64)
    # log(1 + e^-z) for y=1, log(1 + e^z) for y=0, computed stably
    logloss = float(np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))
    hard = y > 0.5
    auc = float(roc_auc_score(hard, z)) if 0 < hard.sum() < len(hard) else float("nan")
    return {"auc": auc, "logloss": logloss}


def _labels(frame: pd.DataFrame, label: str, where: str) -> np.ndarray:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where} expects a pandas DataFrame, got {type(frame).__name__}.")
    if label not in frame.columns:
        raise DataError(
            f"{where}: label column {label!r} not in the frame (columns: {list(frame.columns)}); "
            f"pass label=<name of the 0/1 click column>.",
            column=label,
        )
    y = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(y) | (y < 0) | (y > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: label values must be in [0, 1]; row {i} holds {frame[label].iloc[i]!r}.",
            column=label,
        )
    if len(y) == 0:
        raise DataError(f"{where}: the frame is empty.")
    return y.astype(np.float32)
