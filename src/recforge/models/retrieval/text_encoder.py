"""Content recall with a small BERT-style text encoder trained here, on the catalogue's own
text and the users' histories: a user's history pooled from its items' text encodings
should pick the item the user consumed next, and items nobody has clicked yet (cold items) get vectors from their text alone.

Pretrained text models are not assumed to exist (nothing is downloaded); the
sentence-transformers path of the ``content`` model is the option when one is on disk.

1. **Documents.** One per item, from ``interactions.item_features`` exactly as the
   ``content`` model builds them (``recforge.models.retrieval.content.item_documents``): the
   text columns joined, plus ``column=value`` tokens for categorical / list columns.
2. **Tokenizer.** A WordPiece vocabulary (``vocab_size``) trained on those documents with
   the ``tokenizers`` library: BERT normalisation (lower case, accents stripped), words split
   on white space and punctuation (``=`` and ``_`` kept inside a word, so ``genres=drama``
   stays one word), ``[CLS]`` prepended, truncated to ``max_len``. Saved as its JSON. (The
   trainer breaks ties between equally frequent merges in no fixed order, so two fits may
   differ by a few subwords: the saved tokenizer, not the seed, pins a model. To keep the
   rest of a fit from depending on that, subwords are numbered in string order and each
   token's initial embedding is drawn from (seed, the token's CRC-32), not from its id.)
3. **Encoder.** Token embeddings + learned positions -> ``n_layers`` Pre-LN Transformer
   blocks (``recforge.nn.transformer``, bidirectional: every token sees every token) ->
   mean pooling over the real tokens, or the ``[CLS]`` token -> a linear projection to
   ``embedding_dim`` -> L2 normalisation.
4. **Training** (``objective``). ``"history"`` (default), the task that is served: for a
   training interaction (user u, item i), ``n_history`` of u's other training items are
   drawn; u's vector is the L2-normalised mean of their encodings, and it should pick i's
   encoding among the batch's B target items: InfoNCE, cosine / ``temperature``, where
   another row's target that u consumed is masked out, and (``logq_correction``) log of
   each target's training frequency is subtracted from its logits, so that the loss
   estimates the full softmax rather than pushing popular items down for being frequent
   in-batch negatives (on the cold-item benchmark it mattered: without it the encoder
   ranks cold items well below TF-IDF). ``"pairs"``: items consumed by the same user
   within ``window`` steps of each other pick each other (both directions, a negative
   equal to the row's anchor or positive masked out).
   With ``tfidf_weight`` w > 0, every item vector is ``[sqrt(1 - w) encoder,
   sqrt(w) TF-IDF/SVD]`` in training and serving: the encoder learns next to a fixed
   TF-IDF part.
5. **Serving.** Item vectors are the encoder's outputs; a user is the L2-normalised mean of
   the vectors of the items in the user's training history; scores are dot products, so the
   model goes into the Faiss index like every ``EmbeddingMixin`` model. With
   ``feature_items`` (default), items that appear only in ``item_features`` (no
   interaction at all) join the catalogue and are recommended like the others.
   ``encode_items(item_features)`` embeds items added after training from their text.

Items whose document is empty get zero vectors (score 0, never similar), as in ``content``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from recforge import losses as L
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.registry import register
from recforge.models.retrieval.content import (
    apply_tfidf,
    extend_catalogue,
    fit_tfidf,
    item_documents,
)
from recforge.models.retrieval.item2vec import l2_normalize, mean_item_vectors
from recforge.models.retrieval.torch_base import EpochBatches, TorchRetrievalModel
from recforge.nn.positional import LearnedPositions
from recforge.nn.sequence_pool import SequencePooling
from recforge.nn.transformer import TransformerEncoder

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
OBJECTIVES = ("history", "pairs")
PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"  # ids 0, 1, 2
ENCODE_BATCH = 1024  # items embedded per forward pass when materialising vectors


# ---------------------------------------------------------------------- tokenizer
def train_tokenizer(docs: list[str], vocab_size: int, max_len: int, min_frequency: int = 1):
    """A WordPiece ``tokenizers.Tokenizer`` trained on ``docs`` (see the module docstring),
    with ``[CLS]`` prepended and truncation to ``max_len`` tokens."""
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^\w=]"), "isolated")]
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, UNK, CLS],
        show_progress=False,
    )
    tok.train_from_iterator([d for d in docs if d], trainer=trainer)
    # the trainer numbers (and breaks ties between) subwords in hash order, which differs
    # between processes: renumber them in string order so that the ids do not depend on it
    learned = sorted(t for t in tok.get_vocab() if t not in (PAD, UNK, CLS))
    vocab = {t: i for i, t in enumerate([PAD, UNK, CLS, *learned])}
    tok.model = models.WordPiece(vocab=vocab, unk_token=UNK)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A", special_tokens=[(CLS, tok.token_to_id(CLS))]
    )
    tok.enable_truncation(max_length=max_len)
    return tok


def load_tokenizer(text: str):
    """The tokenizer saved by ``Tokenizer.to_str()``."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def tokenize(tok, docs: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids (n, max_len) int64, 0 = padding, left-aligned; lengths (n,) int64).
    An empty document has length 0 (no ``[CLS]`` either)."""
    ids = np.zeros((len(docs), max_len), dtype=np.int64)
    lengths = np.zeros(len(docs), dtype=np.int64)
    for row, enc in enumerate(tok.encode_batch(docs)):
        if not docs[row]:
            continue
        seq = enc.ids[:max_len]
        ids[row, : len(seq)] = seq
        lengths[row] = len(seq)
    return ids, lengths


# ---------------------------------------------------------------------- encoder
class TextEncoder(nn.Module):
    """Token ids (B, L) -> L2-normalised (B, out_dim): embeddings + positions, a
    bidirectional Transformer, mean or [CLS] pooling, a projection."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        out_dim: int,
        *,
        n_layers: int,
        n_heads: int,
        max_len: int,
        dropout: float,
        pooling: str,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        nn.init.normal_(self.tokens.weight, std=0.02)
        with torch.no_grad():
            self.tokens.weight[0].zero_()
        self.positions = LearnedPositions(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(dim, n_layers, n_heads, dropout=dropout, norm_first=True)
        self.pool = SequencePooling(dim, "mean")
        self.project = nn.Linear(dim, out_dim)
        self.pooling = pooling

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64, 0 = padding -> (B, out_dim); an all-padding row gives 0."""
        valid = ids > 0  # (B, L)
        x = self.drop(self.positions(self.tokens(ids)))  # (B, L, D)
        h = self.encoder(x, valid)  # (B, L, D), 0 where padded
        pooled = h[:, 0] if self.pooling == "cls" else self.pool(h, valid)  # (B, D)
        out = F.normalize(self.project(pooled), dim=-1)  # (B, out_dim)
        return out * valid.any(1, keepdim=True).to(out.dtype)


def history_examples(seen) -> np.ndarray:
    """(N, 2) (user, position in the user's row of the CSR ``seen``) of every entry of
    the users with at least two: the targets of the history objective."""
    lengths = np.diff(seen.indptr)
    users = np.repeat(np.arange(seen.shape[0]), lengths)
    pos = np.arange(seen.nnz) - seen.indptr[users]
    keep = lengths[users] >= 2
    return np.stack([users[keep], pos[keep]], 1).astype(np.int64)


def sample_histories(
    seen, examples: np.ndarray, n_history: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each (user, target position) row: (target items (B,), ``n_history`` items drawn
    with replacement from the user's other training items (B, n_history))."""
    users, pos = examples[:, 0], examples[:, 1]
    start, n = seen.indptr[users], np.diff(seen.indptr)[users]
    draw = rng.integers(0, n[:, None] - 1, size=(len(users), n_history))  # skip the target
    draw = draw + (draw >= pos[:, None])
    return seen.indices[start + pos], seen.indices[start[:, None] + draw]


def co_consumed_pairs(
    interactions: Interactions, user_vocab, item_vocab, window: int
) -> np.ndarray:
    """(P, 2) internal item indices (a, b), a != b: b consumed by the same user 1..window
    steps after a (timestamp order when there is one, else the log's order)."""
    frame = interactions.frame
    cols = ["user", "timestamp"] if interactions.has("timestamp") else ["user"]
    frame = frame.sort_values(cols, kind="stable")
    users = user_vocab.index(frame["user"].to_numpy())
    items = item_vocab.index(frame["item"].to_numpy())
    out = []
    for d in range(1, window + 1):
        same = users[d:] == users[:-d]
        a, b = items[:-d][same], items[d:][same]
        out.append(np.stack([a, b], 1))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
    return pairs[pairs[:, 0] != pairs[:, 1]]


# ---------------------------------------------------------------------- model
@register("text_encoder")
class TextEncoderRecall(TorchRetrievalModel):
    """A WordPiece tokenizer and a small Transformer text encoder trained here with InfoNCE
    (a user's pooled history picks the held-out item; co-consumed pairs as an option); recommends cold items from their text (see module docstring).

    Parameters
    ----------
    text_columns: item_features columns holding free text (joined).
    token_columns: categorical (or list-valued) item_features columns added as tokens.
    feature_items: also put in the catalogue the items that appear only in item_features
        (never interacted with); they get vectors from their text.
    vocab_size: WordPiece vocabulary size (special tokens included).
    min_frequency: a subword must occur this many times to enter the vocabulary.
    max_len: tokens kept per item ([CLS] included).
    hidden_dim: Transformer width (embedding_dim is the output vector size).
    n_layers: Transformer blocks.
    n_heads: attention heads (hidden_dim must divide by it).
    dropout: on embeddings, attention and the FFN while training.
    pooling: "mean" over the real tokens or "cls" (the first token).
    objective: "history" (default): a user's history (the mean vector of ``n_history``
        of the user's other training items) should pick the held-out item's vector among
        the batch's items: the task that is served. "pairs": two items consumed within
        ``window`` steps of each other should pick each other (both directions).
    n_history: history items drawn (with replacement) per training example ("history").
    logq_correction: subtract log(item frequency) from the in-batch logits ("history"),
        so that popular items are not pushed down for being frequent negatives.
    tfidf_weight: 0 (default): item vectors are the encoder's alone. w in (0, 1): an item's
        vector is [sqrt(1 - w) * encoder vector, sqrt(w) * its TF-IDF/SVD vector], both
        unit length, so a score is (1 - w) encoder cosine + w TF-IDF cosine (before the
        user's normalisation); the encoder trains with the TF-IDF part in place, so it
        learns what TF-IDF misses.
    tfidf_dim: SVD components of the TF-IDF part (as ``content``'s ``dim``).
    temperature: InfoNCE temperature of the cosine logits.
    window: a pair is two items of one user at most this many steps apart ("pairs").
    max_pairs: at most this many training examples (pairs or user/item targets) per epoch
        (a fresh random subset each epoch; None: all).
    embedding_dim, epochs, batch_size, lr, optimizer, weight_decay, seed, num_threads,
        progress: training (shared by the torch retrieval models, see ``TorchRetrievalModel``).
    """

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 8,
        "hidden_dim": 16,
        "n_layers": 1,
        "vocab_size": 60,
        "epochs": 2,
        "batch_size": 64,
        "token_columns": ["category"],
    }
    train_defaults: ClassVar[dict[str, Any]] = {
        "embedding_dim": 64,
        "epochs": 5,
        "batch_size": 256,
        "lr": 1e-3,
        "optimizer": "adamw",
        "weight_decay": 0.01,
    }
    supports_history = True  # a user is the mean of the history's item vectors, exactly

    def __init__(
        self,
        *,
        text_columns: tuple[str, ...] | list[str] = ("title",),
        token_columns: tuple[str, ...] | list[str] = (),
        feature_items: bool = True,
        vocab_size: int = 8000,
        min_frequency: int = 1,
        max_len: int = 32,
        hidden_dim: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.1,
        pooling: str = "mean",
        objective: str = "history",
        n_history: int = 8,
        logq_correction: bool = True,
        tfidf_weight: float = 0.0,
        tfidf_dim: int = 64,
        temperature: float = 0.1,
        window: int = 3,
        max_pairs: int | None = 20_000,
        **shared: Any,
    ) -> None:
        super().__init__(**(self.train_defaults | shared))
        self.text_columns = text_columns
        self.token_columns = token_columns
        self.feature_items = feature_items
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.max_len = max_len
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.pooling = pooling
        self.objective = objective
        self.n_history = n_history
        self.logq_correction = logq_correction
        self.tfidf_weight = tfidf_weight
        self.tfidf_dim = tfidf_dim
        self.temperature = temperature
        self.window = window
        self.max_pairs = max_pairs

    # ------------------------------------------------------------------ fit
    def _check(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"text_encoder: pooling must be one of {POOLINGS}, got {self.pooling!r}."
            )
        if self.hidden_dim % self.n_heads:
            raise ConfigError(
                f"text_encoder: hidden_dim={self.hidden_dim} must be a multiple of "
                f"n_heads={self.n_heads}."
            )
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"text_encoder: objective must be one of {OBJECTIVES}, got {self.objective!r}."
            )
        for name in ("vocab_size", "max_len", "window", "n_layers", "min_frequency", "n_history"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"text_encoder: {name} must be >= 1, got {getattr(self, name)}.")
        if not 0.0 <= float(self.tfidf_weight) < 1.0:
            raise ConfigError(
                f"text_encoder: tfidf_weight must be in [0, 1), got {self.tfidf_weight}."
            )
        if self.max_len < 2 or self.temperature <= 0:
            raise ConfigError(
                f"text_encoder: max_len must be >= 2 ([CLS] and a word) and temperature > 0, "
                f"got max_len={self.max_len}, temperature={self.temperature}."
            )

    def _documents(self, item_features: pd.DataFrame | None, raw_ids: np.ndarray) -> list[str]:
        return item_documents(
            item_features, raw_ids, list(self.text_columns), list(self.token_columns)
        )

    def _build_module(self, vocab_size: int) -> TextEncoder:
        return TextEncoder(
            vocab_size,
            int(self.hidden_dim),
            int(self.embedding_dim),
            n_layers=int(self.n_layers),
            n_heads=int(self.n_heads),
            max_len=int(self.max_len),
            dropout=float(self.dropout),
            pooling=self.pooling,
        )

    def _fit(self, interactions: Interactions) -> None:
        self._check()
        if self.feature_items:
            extend_catalogue(self, interactions.item_features)
        docs = self._documents(interactions.item_features, self.item_vocab_.raw_ids)
        if not any(docs):
            raise DataError(
                f"text_encoder: every item document is empty (columns {list(self.text_columns)}"
                f" + {list(self.token_columns)}); give columns that hold text."
            )
        tok = train_tokenizer(
            docs, int(self.vocab_size), int(self.max_len), int(self.min_frequency)
        )
        self.tokenizer_json_ = tok.to_str()
        ids, lengths = tokenize(tok, docs, int(self.max_len))  # (I, L), (I,)
        self.tfidf_state_ = None
        tfidf = None
        if self.tfidf_weight > 0:
            tfidf, self.tfidf_state_ = fit_tfidf(docs, int(self.tfidf_dim), int(self.seed))
            tfidf = l2_normalize(tfidf)  # (I, d), zero rows for empty docs
        examples, loss_fn = (
            self._history_task(lengths > 0)
            if self.objective == "history"
            else self._pairs_task(interactions, lengths)
        )
        log.info(
            "text_encoder: %d items (%d without text), vocabulary %d, %d %s examples",
            len(docs),
            int((lengths == 0).sum()),
            tok.get_vocab_size(),
            len(examples),
            self.objective,
        )
        torch.manual_seed(self.seed)
        module = self._build_module(tok.get_vocab_size())
        _token_init(module.tokens, tok, int(self.seed))
        self._item_ids, self._item_len = torch.from_numpy(ids), torch.from_numpy(lengths)
        self._tfidf = None if tfidf is None else torch.from_numpy(tfidf)
        n = len(examples)
        per_epoch = n if self.max_pairs is None else min(n, int(self.max_pairs))
        bs = int(self.batch_size)

        def batches(epoch: int) -> EpochBatches:
            rng = np.random.default_rng([self.seed, epoch])

            def make():
                order = rng.permutation(n)[:per_epoch]
                for start in range(0, per_epoch, bs):
                    yield examples[order[start : start + bs]], rng

            return EpochBatches(-(-per_epoch // bs), make)

        def vectors(m: TextEncoder) -> tuple[np.ndarray, np.ndarray]:
            items = self._join(_encode(m, ids), tfidf)
            return l2_normalize(mean_item_vectors(self.seen_, items)), items

        try:
            self._train(module, loss_fn, batches, vectors=vectors, monitor="recall@10")
        finally:
            del self._item_ids, self._item_len, self._tfidf
        self.module_ = module.eval()
        with torch.no_grad():
            self.user_factors_, self.item_factors_ = vectors(module)

    def _embed(self, m: TextEncoder, items: torch.Tensor) -> torch.Tensor:
        """Vectors (*items.shape, D) of internal item ids, each distinct item encoded once."""
        uniq, inv = torch.unique(items.reshape(-1), return_inverse=True)
        width = max(1, int(self._item_len[uniq].max()))
        vecs = m(self._item_ids[uniq, :width])
        if self._tfidf is not None:
            vecs = self._join(vecs, self._tfidf[uniq])
        return vecs[inv].reshape(*items.shape, -1)

    def _join(self, enc, tfidf):  # type: ignore[no-untyped-def]
        """[sqrt(1 - w) enc, sqrt(w) tfidf] (numpy or torch rows), or enc when w = 0."""
        w = float(self.tfidf_weight)
        if tfidf is None or w == 0:
            return enc
        if isinstance(enc, torch.Tensor):
            return torch.cat([enc * (1 - w) ** 0.5, tfidf * w**0.5], 1)
        return np.concatenate([enc * (1 - w) ** 0.5, tfidf * w**0.5], 1).astype(np.float32)

    def _history_task(self, has_text: np.ndarray):  # type: ignore[no-untyped-def]
        """(examples (N, 2) user/position, loss): a user's sampled history -> the held-out
        item, over in-batch items; another row's item that the user consumed is masked."""
        # targets and history items are drawn among the training items with text only
        text_seen = self.seen_.tocsr().multiply(has_text[None, :].astype(np.float32)).tocsr()
        text_seen.eliminate_zeros()
        text_seen.sort_indices()
        examples = history_examples(text_seen)
        if len(examples) == 0:
            raise DataError(
                "text_encoder: no user has two training items with text; nothing to train on."
            )
        temperature, n_hist = float(self.temperature), int(self.n_history)
        # in-batch items are drawn by popularity; subtracting log q(item) makes the loss
        # estimate the full softmax, which keeps popularity in the scores
        counts = np.bincount(text_seen.indices, minlength=text_seen.shape[1]).astype(np.float64)
        log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32))
        use_q = bool(self.logq_correction)

        def loss_fn(m: TextEncoder, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
            rows, rng = batch
            target, hist = sample_histories(text_seen, rows, n_hist, rng)
            vecs = self._embed(m, torch.from_numpy(np.concatenate([target[:, None], hist], 1)))
            user = F.normalize(vecs[:, 1:].mean(1), dim=-1)  # (B, D)
            logits = user @ vecs[:, 0].T / temperature  # (B, B)
            if use_q:
                logits = logits - log_q[torch.from_numpy(target)]
            consumed = text_seen[rows[:, 0]][:, target].toarray() > 0  # (B, B)
            np.fill_diagonal(consumed, False)
            logits = logits.masked_fill(torch.from_numpy(consumed), torch.finfo(logits.dtype).min)
            return F.cross_entropy(logits, torch.arange(len(rows)))

        return examples, loss_fn

    def _pairs_task(self, interactions: Interactions, lengths: np.ndarray):  # type: ignore[no-untyped-def]
        """(pairs (P, 2), loss): co-consumed items pick each other, both directions."""
        pairs = co_consumed_pairs(
            interactions, self.user_vocab_, self.item_vocab_, int(self.window)
        )
        has_text = lengths[pairs].min(1) > 0 if len(pairs) else np.zeros(0, bool)
        pairs = pairs[has_text]
        if len(pairs) == 0:
            raise DataError(
                "text_encoder: no two items with text were consumed by one user within "
                f"window={self.window} steps; nothing to train on."
            )
        temperature = float(self.temperature)

        def loss_fn(m: TextEncoder, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
            rows = torch.from_numpy(batch[0])  # (B, 2)
            vecs = self._embed(m, rows)  # (B, 2, D)
            a, b = vecs[:, 0], vecs[:, 1]
            ia, ib = rows[:, 0], rows[:, 1]
            return 0.5 * (
                L.infonce(a, b, temperature, normalize=False, key_ids=ib, query_ids=ia)
                + L.infonce(b, a, temperature, normalize=False, key_ids=ia, query_ids=ib)
            )

        return pairs, loss_fn

    # ------------------------------------------------------------------ new items
    def encode_items(self, item_features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of the items in ``item_features`` (indexed by raw item id, the columns
        the model was trained on), for items that arrive after training: (raw ids (n,),
        vectors (n, embedding_dim) float32, zero rows for items without text)."""
        self._check_fitted("encode_items")
        raw = np.asarray(item_features.index[~item_features.index.duplicated()])
        docs = self._documents(item_features, raw)
        ids, _ = tokenize(load_tokenizer(self.tokenizer_json_), docs, int(self.max_len))
        tfidf = None
        if self.tfidf_state_ is not None:
            tfidf = l2_normalize(apply_tfidf(docs, self.tfidf_state_))
        return raw, self._join(_encode(self.module_, ids), tfidf)

    # ------------------------------------------------------------------ history, persistence
    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        """(n_items,) scores of the normalised mean vector of the (distinct) history items."""
        self._check_fitted("score_history")
        item_idx = np.unique(np.asarray(item_idx, dtype=np.int64))
        if len(item_idx) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        user = l2_normalize(self.item_factors_[item_idx].mean(0, keepdims=True, dtype=np.float64))
        return (self.item_factors_ @ user[0]).astype(np.float32)

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        arrays.update(self._module_arrays())
        state["tokenizer"] = self.tokenizer_json_
        tf = self.tfidf_state_
        state["tfidf_terms"] = None if tf is None else tf["terms"]
        if tf is not None:
            arrays["tfidf.idf"] = tf["idf"]
            if tf["components"] is not None:
                arrays["tfidf.components"] = tf["components"]
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.tokenizer_json_ = state["tokenizer"]
        terms = state.get("tfidf_terms")
        self.tfidf_state_ = None
        if terms is not None:
            self.tfidf_state_ = {
                "terms": terms,
                "idf": np.asarray(arrays["tfidf.idf"]),
                "components": arrays.get("tfidf.components"),
            }
        tok = load_tokenizer(self.tokenizer_json_)
        module = self._build_module(tok.get_vocab_size())
        module.load_state_dict(self._module_state(arrays), strict=True)
        self.module_ = module.eval()


def _token_init(table: nn.Embedding, tok, seed: int, std: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    """Each token's initial embedding drawn from a generator seeded by (seed, the token's
    CRC-32), so that it does not depend on the token's id (two tokenizer fits may differ by
    a few subwords, which shifts ids); [PAD] stays 0."""
    import zlib

    rows = np.zeros(tuple(table.weight.shape), dtype=np.float32)
    for token, i in tok.get_vocab().items():
        if i:
            rng = np.random.default_rng([seed, zlib.crc32(token.encode())])
            rows[i] = rng.normal(0.0, std, rows.shape[1])
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(rows))


def _encode(module: TextEncoder, ids: np.ndarray) -> np.ndarray:
    """Item vectors (n, out_dim) float32 of token ids (n, L), in eval mode, in chunks."""
    was_training = module.training
    module.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), ENCODE_BATCH):
            chunk = torch.from_numpy(ids[start : start + ENCODE_BATCH])
            width = max(1, int((chunk > 0).sum(1).max()))
            out.append(module(chunk[:, :width]).numpy())
    module.train(was_training)
    dim = module.project.out_features
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)
