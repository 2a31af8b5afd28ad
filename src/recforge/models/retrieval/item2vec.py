"""Item2Vec (Barkan & Koenigstein 2016): word2vec over users' item sequences.

Each user's items, in time order, form a "sentence" (split into sessions wherever two
consecutive interactions are more than ``session_gap`` apart, when timestamps exist);
``gensim.models.Word2Vec`` learns one vector per item. A user's vector is the mean of the
vectors of their items, optionally recency-weighted: the j-th most recent item (j = 0 is
the latest) gets weight ``recency_decay ** j``.

Scores (``score``):

* ``"output"`` (default): ``mean of the user's input vectors · the item's output vector``,
  word2vec's own prediction of a context item from the user's items (negative sampling
  only). The output vectors carry item frequency, which cosine on input vectors loses; on
  ML-100K this is about 4x the Recall@10 of ``"input"`` (see docs/BENCHMARKS.md).
* ``"input"``: ``user mean · item input vector``, as in the Item2Vec paper.

With ``similarity="cosine"`` the vectors used are L2-normalised (and the user mean
re-normalised), so the dot product is a cosine. ``similar_items`` is always the cosine
between input vectors (``item_input_``), the paper's item-item similarity.

Items seen fewer than ``min_count`` times are dropped by word2vec and get a zero vector:
they score 0 for everyone and are never anyone's similar item (cosine 0). Keep
``min_count=1`` to embed every item.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.models.base import EmbeddingMixin, RetrievalModel
from recforge.models.registry import register
from recforge.threads import reproducible_threads
from recforge.topk import topk

log = logging.getLogger(__name__)

SIMILARITIES = ("dot", "cosine")


def item_sentences(
    interactions: Interactions,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    session_gap: float | None = None,
) -> list[list[str]]:
    """Users' item sequences as word2vec sentences of item-index strings.

    user_idx, item_idx: (n,) internal indices of each row of ``interactions.frame``.
    Rows are ordered by (user, timestamp) when a timestamp column exists, else by (user,
    row order). A new sentence starts at each user, and, when ``session_gap`` is set, after
    any gap longer than ``session_gap`` (in the timestamp's unit). Returns the sentences.
    """
    n = len(user_idx)
    if interactions.has("timestamp"):
        ts = _timestamps(interactions)
        order = np.lexsort((ts, user_idx))  # by user, then time (stable)
        ts = ts[order]
    else:
        order = np.argsort(user_idx, kind="stable")
        ts = None
    u, it = user_idx[order], item_idx[order]
    start = np.zeros(n, dtype=bool)
    start[0] = True
    start[1:] = u[1:] != u[:-1]
    if session_gap is not None and ts is not None:
        start[1:] |= (ts[1:] - ts[:-1]) > session_gap
    cuts = np.flatnonzero(start)[1:]
    tokens = it.astype(str)
    return [s.tolist() for s in np.split(tokens, cuts)]


def _timestamps(interactions: Interactions) -> np.ndarray:
    """The timestamp column as float64 seconds (datetimes converted)."""
    col = interactions.frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(col):  # any resolution (pandas 3: us) -> seconds
        epoch = pd.Timestamp(0, tz=col.dt.tz)
        return (col - epoch).dt.total_seconds().to_numpy(dtype=np.float64)
    return col.to_numpy(dtype=np.float64)


def word2vec_vectors(
    sentences: list[list[str]],
    n_tokens: int,
    *,
    vector_size: int,
    window: int,
    min_count: int,
    sg: int,
    hs: int,
    negative: int,
    epochs: int,
    alpha: float,
    sample: float,
    seed: int,
    workers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Train gensim Word2Vec on sentences of tokens "0".."n_tokens-1".

    Returns (input, output) vectors, each (n_tokens, vector_size) float32: word2vec's input
    embeddings (``wv``) and its negative-sampling output embeddings (``syn1neg``; zeros
    with hierarchical softmax). Tokens word2vec dropped (below min_count) are zero rows.
    """
    from gensim.models import Word2Vec

    w2v = Word2Vec(
        vector_size=int(vector_size),
        window=int(window),
        min_count=int(min_count),
        sg=int(sg),
        hs=int(hs),
        negative=0 if hs else int(negative),  # hierarchical softmax replaces negative sampling
        epochs=int(epochs),
        alpha=float(alpha),
        sample=float(sample),
        seed=int(seed),
        workers=int(workers),
    )
    inp = np.zeros((n_tokens, vector_size), dtype=np.float32)
    out = np.zeros((n_tokens, vector_size), dtype=np.float32)
    w2v.build_vocab(sentences)
    if not w2v.wv.key_to_index:  # every token below min_count
        log.warning("word2vec: no token reaches min_count=%d; every vector is zero", min_count)
        return inp, out
    w2v.train(sentences, total_examples=w2v.corpus_count, epochs=w2v.epochs)
    keys = w2v.wv.index_to_key
    rows = np.fromiter((int(k) for k in keys), dtype=np.int64, count=len(keys))
    inp[rows] = w2v.wv.vectors
    if not hs:
        out[rows] = w2v.syn1neg
    dropped = n_tokens - len(keys)
    if dropped:
        log.info(
            "word2vec: %d of %d tokens below min_count=%d get zeros", dropped, n_tokens, min_count
        )
    return inp, out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero. x: (n, d) -> (n, d) float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def mean_item_vectors(
    seen: sp.csr_matrix, item_vectors: np.ndarray, weights: sp.csr_matrix | None = None
) -> np.ndarray:
    """Each user's (weighted) mean item vector.

    seen: (n_users, n_items) 0/1; weights: same pattern with per-entry weights (None: 1).
    item_vectors: (n_items, d). Returns (n_users, d) float32; users with no items get zeros.
    """
    w = seen if weights is None else weights
    w = sp.csr_matrix(w, dtype=np.float64)
    total = np.asarray(w.sum(axis=1)).ravel()
    total[total == 0] = 1.0
    return (sp.diags(1.0 / total) @ w @ item_vectors.astype(np.float64)).astype(np.float32)


def recency_weights(
    interactions: Interactions,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    shape: tuple[int, int],
    decay: float,
) -> sp.csr_matrix:
    """(n_users, n_items) weights ``decay ** j`` where j = 0 is the user's latest item.

    Order is by timestamp when present, else row order; a repeated item keeps the weight
    of its latest occurrence.
    """
    if interactions.has("timestamp"):
        order = np.lexsort((_timestamps(interactions), user_idx))
    else:
        order = np.argsort(user_idx, kind="stable")
    u, it = user_idx[order], item_idx[order]
    counts = np.bincount(u, minlength=shape[0])
    ends = np.cumsum(counts)  # exclusive end of each user's block
    age = ends[u] - 1 - np.arange(len(u))  # 0 for each user's last row
    w = np.power(float(decay), age.astype(np.float64))
    return _dedupe_max(u, it, w, shape)


def _dedupe_max(
    u: np.ndarray, it: np.ndarray, w: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR from (row, col, value) keeping the largest value of duplicate cells."""
    key = u.astype(np.int64) * shape[1] + it
    order = np.lexsort((-w, key))
    key, w = key[order], w[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, w = key[first], w[first]
    return sp.csr_matrix((w, (key // shape[1], key % shape[1])), shape=shape)


SCORES = ("output", "input")


def check_score(score: str, hs: int, owner: str) -> None:
    """``score`` is valid, and "output" has output vectors (negative sampling)."""
    if score not in SCORES:
        raise ConfigError(f"{owner}: score must be one of {SCORES}, got {score!r}.")
    if score == "output" and hs:
        raise ConfigError(
            f"{owner}: score='output' needs negative sampling (hs=0); with hs=1 use score='input'."
        )


def cosine_neighbours(
    vectors: np.ndarray, item_idx: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``vectors`` (n, d) by cosine to rows ``item_idx``, each row itself excluded."""
    v = l2_normalize(vectors)
    item_idx = np.asarray(item_idx)
    sims = v[item_idx] @ v.T  # (B, n)
    sims[np.arange(len(item_idx)), item_idx] = -np.inf
    return topk(sims, k)


@register("item2vec")
class Item2Vec(EmbeddingMixin, RetrievalModel):
    """Item embeddings from word2vec over item sequences; users are mean item vectors.

    Parameters
    ----------
    vector_size: embedding dimension.
    window: word2vec context window (items on each side).
    min_count: items seen fewer times get zero vectors (see module docstring).
    sg: 1 skip-gram, 0 CBOW.
    hs: 1 hierarchical softmax, 0 negative sampling (with ``negative`` noise items).
    negative: noise items per positive when ``hs=0``.
    epochs: passes over the sentences.
    alpha: initial learning rate.
    sample: down-sampling threshold of frequent items (0 disables).
    session_gap: split a user's sequence where consecutive timestamps differ by more than
        this (timestamp units); None keeps one sentence per user.
    recency_decay: user vector weight ``decay ** j`` of the j-th most recent item; 1.0 is a
        plain mean.
    score: "output" (input mean · output vectors) or "input" (see module docstring).
    similarity: "dot" or "cosine" (L2-normalised vectors).
    seed: word2vec seed; with ``num_threads`` None or 1 training is reproducible.
    num_threads: word2vec threads (None: 1, so that ``seed`` fixes the result; more threads
        train faster but differ run to run).
    """

    smoke_params: ClassVar[dict[str, Any]] = {
        "vector_size": 8,
        "epochs": 3,
        "num_threads": 1,
        "seed": 0,
    }
    supports_history = True

    def __init__(
        self,
        *,
        vector_size: int = 64,
        window: int = 5,
        min_count: int = 1,
        sg: int = 1,
        hs: int = 0,
        negative: int = 5,
        epochs: int = 10,
        alpha: float = 0.025,
        sample: float = 1e-3,
        session_gap: float | None = None,
        recency_decay: float = 1.0,
        score: str = "output",
        similarity: str = "dot",
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        self.vector_size = vector_size
        self.window = window
        self.min_count = min_count
        self.sg = sg
        self.hs = hs
        self.negative = negative
        self.epochs = epochs
        self.alpha = alpha
        self.sample = sample
        self.session_gap = session_gap
        self.recency_decay = recency_decay
        self.score = score
        self.similarity = similarity
        self.seed = seed
        self.num_threads = num_threads

    def _check(self) -> None:
        check_score(self.score, self.hs, "item2vec")
        if self.similarity not in SIMILARITIES:
            raise ConfigError(
                f"item2vec: similarity must be one of {SIMILARITIES}, got {self.similarity!r}."
            )
        if self.sg not in (0, 1) or self.hs not in (0, 1):
            raise ConfigError(
                f"item2vec: sg and hs must be 0 or 1, got sg={self.sg!r}, hs={self.hs!r}."
            )
        if self.hs == 0 and self.negative < 1:
            raise ConfigError(
                "item2vec: hs=0 needs negative >= 1 (negative sampling), or set hs=1."
            )
        if not 0 < self.recency_decay <= 1:
            raise ConfigError(
                f"item2vec: recency_decay must be in (0, 1], got {self.recency_decay!r}."
            )

    def _fit(self, interactions: Interactions) -> None:
        self._check()
        frame = interactions.frame
        u = self.user_vocab_.index(frame["user"].to_numpy())
        i = self.item_vocab_.index(frame["item"].to_numpy())
        sentences = item_sentences(interactions, u, i, self.session_gap)
        inp, out = word2vec_vectors(
            sentences,
            self.n_items,
            vector_size=self.vector_size,
            window=self.window,
            min_count=self.min_count,
            sg=self.sg,
            hs=self.hs,
            negative=self.negative,
            epochs=self.epochs,
            alpha=self.alpha,
            sample=self.sample,
            seed=self.seed,
            workers=reproducible_threads(self.num_threads, self.seed, self.name),
        )
        weights = None
        if self.recency_decay < 1.0:
            weights = recency_weights(interactions, u, i, self.seen_.shape, self.recency_decay)
        cosine = self.similarity == "cosine"
        query = l2_normalize(inp) if cosine else inp
        users = mean_item_vectors(self.seen_, query, weights)
        items = out if self.score == "output" else inp
        self.item_input_ = inp  # (n_items, vector_size) for similar_items
        self.item_factors_ = l2_normalize(items) if cosine else items  # (n_items, vector_size)
        self.user_factors_ = l2_normalize(users) if cosine else users  # (n_users, vector_size)

    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        """(n_items,) float32: the user vector of ``fit`` (recency-weighted mean of the history's
        input vectors, the latest occurrence of a repeated item counting) times the item vectors."""
        item_idx = np.asarray(item_idx, dtype=np.int64)
        if len(item_idx) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        cosine = self.similarity == "cosine"
        query = self.item_input_[item_idx]
        query = l2_normalize(query) if cosine else query
        age = len(item_idx) - 1 - np.arange(len(item_idx))  # 0 for the latest item
        _, last = np.unique(item_idx[::-1], return_index=True)  # latest occurrence of each item
        keep = len(item_idx) - 1 - last
        w = np.power(float(self.recency_decay), age[keep].astype(np.float64))
        user = (w[:, None] * query[keep]).sum(axis=0) / w.sum()
        user = l2_normalize(user[None, :])[0] if cosine else user
        return (self.item_factors_ @ user.astype(np.float32)).astype(np.float32)

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine between input vectors, the item itself excluded."""
        return cosine_neighbours(self.item_input_, item_idx, k)

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        arrays["item_input"] = self.item_input_
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.item_input_ = arrays["item_input"]
