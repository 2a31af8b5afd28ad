"""Content-based retrieval: item text (and categorical tags) -> vectors; users are the mean
of their items' vectors; scores and item similarity are cosines.

Each item's document is its text columns (e.g. ``title``) joined, plus one token
``column=value`` per categorical column (``category=c3``), taken from
``interactions.item_features`` (indexed by raw item id). Encoders:

* ``"tfidf"``: scikit-learn ``TfidfVectorizer`` (unigrams and bigrams, sublinear tf), then
  ``TruncatedSVD`` down to ``dim`` dense components when both the vocabulary and the
  number of items with text exceed ``dim`` (LSA), else the dense tf-idf rows themselves.
* ``"sentence_transformers"``: a sentence-embedding model already on disk
  (``encoder_model``, a local path or a cached hub name; loaded with ``HF_HUB_OFFLINE=1``,
  never downloaded). An optional extra: ``sentence_transformers`` is not a dependency.
* ``"auto"`` (default): the sentence encoder when it is installed and the model is on
  disk, TF-IDF otherwise (silently; the choice is logged and kept in ``encoder_used_``).

Items without a feature row or with empty text get zero vectors (score 0, never similar).
With ``feature_items``, the items that appear only in ``item_features`` (nobody interacted
with them: cold items) join the catalogue after the interacted ones
(``extend_catalogue``), so that they can be recommended from their text.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import EmbeddingMixin, RetrievalModel
from recforge.models.registry import register
from recforge.models.retrieval.item2vec import l2_normalize, mean_item_vectors

log = logging.getLogger(__name__)

ENCODERS = ("auto", "tfidf", "sentence_transformers")


def item_documents(
    item_features: pd.DataFrame | None,
    item_ids: np.ndarray,
    text_columns: list[str],
    token_columns: list[str],
) -> list[str]:
    """One document per raw item id in ``item_ids`` (order kept); "" for items with no row.

    Text columns are joined with spaces; each token column adds ``column=value``
    (multi-valued list cells add one token per value).
    """
    if item_features is None:
        raise DataError(
            "content: interactions.item_features is None; the content model needs an item "
            "feature table with a text column (pass item_features= to Interactions)."
        )
    missing = [c for c in [*text_columns, *token_columns] if c not in item_features.columns]
    if missing:
        raise DataError(
            f"content: item_features has no column(s) {missing}; found {list(item_features.columns)}. "
            f"Set text_columns / token_columns to existing columns.",
            column=missing[0],
        )
    feats = item_features[~item_features.index.duplicated(keep="first")].reindex(item_ids)
    parts = []
    for col in text_columns:
        parts.append(feats[col].fillna("").astype(str).to_numpy())
    for col in token_columns:
        parts.append(np.array([_tokens(col, v) for v in feats[col].tolist()], dtype=object))
    if not parts:
        raise ConfigError("content: give at least one text column or token column.")
    docs = parts[0].astype(object)
    for p in parts[1:]:
        docs = docs + " " + p
    return [str(d).strip() for d in docs]


def extend_catalogue(model: RetrievalModel, item_features: pd.DataFrame | None) -> int:
    """Append to a fitting model's ``item_vocab_`` the ids of ``item_features`` that no
    interaction holds (cold items), and widen ``seen_`` with empty columns for them.
    Returns how many were added (0 without a feature table)."""
    if item_features is None:
        return 0
    ids = pd.unique(item_features.index.to_numpy())
    new = ids[model.item_vocab_.index(ids, unknown="mask") < 0]
    if len(new) == 0:
        return 0
    model.item_vocab_ = IdVocab(
        np.concatenate([model.item_vocab_.raw_ids, new.astype(model.item_vocab_.raw_ids.dtype)]),
        kind="item",
    )
    model.seen_ = sp.hstack(
        [model.seen_, sp.csr_matrix((model.seen_.shape[0], len(new)), dtype=model.seen_.dtype)],
        format="csr",
    )
    log.info("%s: %d items from item_features have no interaction", type(model).__name__, len(new))
    return len(new)


def _tokens(col: str, value: Any) -> str:
    if isinstance(value, list | tuple | np.ndarray | set):
        return " ".join(f"{col}={v}" for v in value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{col}={value}".replace(" ", "_")


TFIDF_PATTERN = r"(?u)\b[\w=.-]+\b"


def fit_tfidf(docs: list[str], dim: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """TF-IDF (uni+bigrams, sublinear tf, rows L2-normalised) over the non-empty ``docs``,
    reduced by TruncatedSVD to ``dim`` components when the vocabulary and the non-empty
    docs both outnumber ``dim``.

    Returns (vectors (len(docs), d) float32, empty docs -> zero rows; d = dim after SVD,
    else the vocabulary size), and the fitted transform as JSON-able terms plus arrays
    (``{"terms": [...], "idf": (V,), "components": (d, V) or None}``) that
    ``apply_tfidf`` uses on new documents.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    nonempty = np.array([bool(d) for d in docs])
    if not nonempty.any():
        return np.zeros((len(docs), 1), dtype=np.float32), {
            "terms": [],
            "idf": np.zeros(0, np.float32),
            "components": None,
        }
    vec = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, token_pattern=TFIDF_PATTERN, dtype=np.float32
    )
    x = vec.fit_transform([d for d in docs if d])  # (n_nonempty, V) sparse, rows L2-normalised
    components = None
    if x.shape[1] > dim and x.shape[0] > dim:
        svd = TruncatedSVD(n_components=dim, random_state=seed)
        dense = svd.fit_transform(x)
        components = svd.components_.astype(np.float32)
    else:
        dense = x.toarray()
    out = np.zeros((len(docs), dense.shape[1]), dtype=np.float32)
    out[nonempty] = dense
    terms = [t for t, _ in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])]
    return out, {"terms": terms, "idf": vec.idf_.astype(np.float32), "components": components}


def apply_tfidf(docs: list[str], state: dict[str, Any]) -> np.ndarray:
    """The rows ``fit_tfidf`` would give ``docs`` under its fitted ``state`` (terms unseen
    at fit time are ignored; empty docs and docs of unseen terms only -> zero rows)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    terms, idf, comp = state["terms"], state["idf"], state["components"]
    width = len(terms) if comp is None else comp.shape[0]
    if not terms:
        return np.zeros((len(docs), max(width, 1)), dtype=np.float32)
    counts = CountVectorizer(
        ngram_range=(1, 2),
        token_pattern=TFIDF_PATTERN,
        vocabulary={t: i for i, t in enumerate(terms)},
        dtype=np.float32,
    ).transform(docs)
    counts.data = 1.0 + np.log(counts.data)  # sublinear tf
    x = normalize(counts.multiply(idf[None, :]).tocsr())
    out = x.toarray() if comp is None else x @ comp.T
    return np.asarray(out, dtype=np.float32)


def tfidf_vectors(docs: list[str], dim: int, seed: int) -> np.ndarray:
    """The vectors of ``fit_tfidf`` (without its fitted transform)."""
    return fit_tfidf(docs, dim, seed)[0]


def sentence_vectors(docs: list[str], model_name: str) -> np.ndarray | None:
    """Sentence-encoder rows for ``docs``, or None when the package or the model files are
    not available locally (never downloads)."""
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # optional extra
    except ImportError:
        return None
    try:
        model = SentenceTransformer(model_name, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to find the files means "not available"
        log.info(
            "content: sentence encoder %r not available locally (%s); using tf-idf", model_name, e
        )
        return None
    nonempty = np.array([bool(d) for d in docs])
    emb = model.encode([d for d in docs if d], convert_to_numpy=True, normalize_embeddings=True)
    out = np.zeros((len(docs), emb.shape[1]), dtype=np.float32)
    out[nonempty] = emb
    return out


@register("content")
class ContentBased(EmbeddingMixin, RetrievalModel):
    """Items as text vectors, users as the mean of their items; cosine scores.

    Parameters
    ----------
    text_columns: item_features columns holding free text (joined).
    token_columns: categorical (or list-valued) item_features columns added as tokens.
    encoder: "auto", "tfidf" or "sentence_transformers" (see module docstring).
    encoder_model: sentence-transformers model name or local path.
    dim: TF-IDF is reduced to this many SVD components when its vocabulary and the number
        of items with text both exceed it (else the raw tf-idf columns are kept).
    seed: SVD seed.
    feature_items: also put in the catalogue the items that appear only in item_features
        (never interacted with: cold items), recommended from their text.
    """

    smoke_params: ClassVar[dict[str, Any]] = {"dim": 8, "encoder": "tfidf"}

    def __init__(
        self,
        *,
        text_columns: tuple[str, ...] | list[str] = ("title",),
        token_columns: tuple[str, ...] | list[str] = (),
        encoder: str = "auto",
        encoder_model: str = "sentence-transformers/all-MiniLM-L6-v2",
        dim: int = 128,
        seed: int = 0,
        feature_items: bool = False,
    ) -> None:
        self.text_columns = text_columns
        self.token_columns = token_columns
        self.encoder = encoder
        self.encoder_model = encoder_model
        self.dim = dim
        self.seed = seed
        self.feature_items = feature_items

    def _fit(self, interactions: Interactions) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"content: encoder must be one of {ENCODERS}, got {self.encoder!r}.")
        if self.feature_items:
            extend_catalogue(self, interactions.item_features)
        docs = item_documents(
            interactions.item_features,
            self.item_vocab_.raw_ids,
            list(self.text_columns),
            list(self.token_columns),
        )
        vectors = None
        used = "tfidf"
        if self.encoder in ("auto", "sentence_transformers"):
            vectors = sentence_vectors(docs, self.encoder_model)
            if vectors is None and self.encoder == "sentence_transformers":
                raise ConfigError(
                    f"content: encoder='sentence_transformers' but the package or the model "
                    f"{self.encoder_model!r} is not available locally; install the extra and "
                    f"place the model on disk, or use encoder='tfidf'."
                )
            if vectors is not None:
                used = "sentence_transformers"
        if vectors is None:
            vectors = tfidf_vectors(docs, int(self.dim), int(self.seed))
        self.encoder_used_ = used
        n_empty = sum(1 for d in docs if not d)
        if n_empty:
            log.info(
                "content: %d of %d items have no text; they get zero vectors", n_empty, len(docs)
            )
        items = l2_normalize(vectors)  # (n_items, d)
        self.item_factors_ = items
        self.user_factors_ = l2_normalize(mean_item_vectors(self.seen_, items))  # (n_users, d)
        log.info("content: %s vectors, dim %d", used, items.shape[1])

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        state["encoder_used"] = self.encoder_used_
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.encoder_used_ = state["encoder_used"]
