"""Multi-channel recall: several retrieval models, each with a quota, merged into one
candidate set per user with provenance, and a popularity fallback for everyone else.

    pipe = RecallPipeline.from_config({
        "channels": [
            {"name": "als", "model": "als", "params": {"factors": 64}, "quota": 200},
            {"name": "i2v", "model": "item2vec", "quota": 100, "weight": 0.5,
             "index": {"kind": "hnsw"}},
        ],
        "merge": "quota",
    }).fit(train)
    result = pipe.recommend(["u1", "u2"], k=300)   # a RecallResult
    result.frame                                    # one row per (user, candidate)

Each channel returns its top ``quota`` items per user (the user's seen items excluded),
through a Faiss index when the channel has an ``index`` config. Candidates are merged:

* ``"quota"``: round-robin over channels in config order (rank 1 of every channel, then
  rank 2, ...), a channel dropping out when its quota is used up; an item already taken
  is skipped. Channels with larger quotas fill the tail.
* ``"weighted"``: per user and channel, scores are min-max normalised to [0, 1]; an item's
  merged score is ``sum_c weight_c * norm_score_c`` over the channels that found it.

Users no channel knows (cold start), and known users with fewer than ``k`` merged
candidates, are filled from the fallback model (most popular by default) after every
channel's candidates; the pipeline never raises on an unknown user.

Provenance: ``RecallResult.frame`` has columns ``user, item, rank`` (0-based merged
position), ``score`` (the weighted merged score, also under "quota"), ``channels`` (tuple
of the channel names that found the item, or ``("fallback",)``) and, per channel and the
fallback, ``<name>_rank`` (0-based rank in that channel, NaN if absent) and
``<name>_score`` (raw channel score).

``save(dir)`` writes ``recall.json`` (the config) plus each channel's model directory and
Faiss index under ``channels/<name>/`` and the fallback under ``fallback/``, atomically;
``RecallPipeline.verify(dir)`` checks every file's checksum without building the models.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge import models
from recforge.artifacts import atomic_dir, read_json, verify_artifact
from recforge.config import check_keys, from_dict, load_yaml
from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab
from recforge.exceptions import ArtifactError, ConfigError, DataError, NotFittedError
from recforge.index.faiss_index import AnnIndex, AnnRecommender, IndexConfig, verify_index
from recforge.models.base import _check_k, seen_row
from recforge.topk import topk

log = logging.getLogger(__name__)

MERGES = ("quota", "weighted")
MANIFEST = "recall.json"
FORMAT_VERSION = 1
FALLBACK = "fallback"
# A channel name is a directory name under channels/: letters, digits, "_", "-" and inner
# dots; never "." or ".." or hidden (no leading dot), no separators, at most 64 characters.
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


# ---------------------------------------------------------------------------- configs
@dataclass
class ChannelConfig:
    """One recall channel in a config file."""

    name: str  # unique channel name (letters, digits, _ . -); names provenance columns
    model: str  # registered retrieval model name, e.g. "als"
    params: dict[str, Any] = field(default_factory=dict)  # the model's hyperparameters
    quota: int = 100  # top items asked of this channel per user (at most this many
    # merged candidates: items another channel already gave are not replaced)
    weight: float = 1.0  # weight of its normalised scores under merge="weighted"
    index: dict[str, Any] | None = None  # IndexConfig fields: serve through a Faiss index


@dataclass
class RecallConfig:
    """A whole recall pipeline in a config file."""

    channels: list[ChannelConfig]  # at least one channel
    fallback: str | None = "most_popular"  # registered model for cold users / filling; None: none
    fallback_params: dict[str, Any] = field(default_factory=dict)
    merge: str = "quota"  # "quota" (round-robin) or "weighted" (normalised score sum)
    k: int | None = None  # candidates per user; None: the sum of the quotas


def recall_config(data: dict[str, Any] | str | Path) -> RecallConfig:
    """Parse a dict or YAML file (optionally under a top-level ``recall`` key); unknown
    keys anywhere are an error naming the key."""
    if isinstance(data, str | Path):
        where = str(data)
        data = load_yaml(data)
    else:
        where = "recall config"
    if "recall" in data and isinstance(data["recall"], dict):
        data = data["recall"]
    data = dict(data)
    channels = data.pop("channels", None)
    if not isinstance(channels, list) or not channels:
        raise ConfigError(f"{where}: 'channels' must be a non-empty list of channel mappings.")
    check_keys(data, [f for f in RecallConfig.__dataclass_fields__ if f != "channels"], where)
    parsed = [
        from_dict(ChannelConfig, c, where=f"{where}: channels[{i}]") for i, c in enumerate(channels)
    ]
    return RecallConfig(channels=parsed, **data)


# ---------------------------------------------------------------------------- runtime
@dataclass
class Channel:
    """A recall channel: a retrieval model (fitted or not), its quota and merge weight,
    and optionally an ANN index config (``IndexConfig`` or dict of its fields)."""

    name: str
    model: Any
    quota: int = 100
    weight: float = 1.0
    index: IndexConfig | dict[str, Any] | None = None
    ann_: AnnRecommender | None = field(default=None, repr=False)

    def retriever(self) -> Any:
        return self.ann_ if self.ann_ is not None else self.model


@dataclass
class RecallResult:
    """Merged candidates of a batch of users.

    frame: one row per (user, candidate), users in request order, candidates best first;
    columns described in the module docstring. user_ids: the requested users.
    """

    frame: pd.DataFrame
    user_ids: list[Any]
    channel_names: list[str]

    def for_user(self, user_id: Any) -> pd.DataFrame:
        """The candidates of one user, best first."""
        return self.frame[self.frame["user"] == user_id].reset_index(drop=True)

    def items(self) -> list[np.ndarray]:
        """Candidate item ids per requested user, best first (a ragged list)."""
        groups = self.frame.groupby("user_pos", sort=True)["item"]
        out: list[np.ndarray] = [np.array([], dtype=object)] * len(self.user_ids)
        for pos, items in groups:
            out[int(pos)] = items.to_numpy()
        return out

    def __len__(self) -> int:
        return len(self.user_ids)


class RecallPipeline:
    """Several recall channels merged into one candidate set per user (module docstring)."""

    def __init__(
        self,
        channels: list[Channel],
        *,
        fallback: str | Any | None = "most_popular",
        merge: str = "quota",
        k: int | None = None,
    ) -> None:
        if not channels:
            raise ConfigError("RecallPipeline needs at least one channel.")
        names = [c.name for c in channels]
        for c in channels:
            if not _safe_channel_name(c.name):
                raise ConfigError(
                    f"recall channel name {c.name!r} must be 1-64 letters, digits, '_', '-' "
                    f"or '.' (not first), and not be {FALLBACK!r}: it names a directory."
                )
            if int(c.quota) < 1:
                raise ConfigError(
                    f"recall channel {c.name!r}: quota must be >= 1, got {c.quota!r}."
                )
            if getattr(c.model, "kind", None) != "retrieval":
                raise ConfigError(
                    f"recall channel {c.name!r}: {type(c.model).__name__} is not a retrieval model."
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"recall channel names must be unique, got {names}.")
        if merge not in MERGES:
            raise ConfigError(f"recall merge must be one of {MERGES}, got {merge!r}.")
        if k is not None and k < 1:
            raise ConfigError(f"recall k must be >= 1, got {k!r}.")
        self.channels = channels
        self.fallback = models.get(fallback) if isinstance(fallback, str) else fallback
        self.merge = merge
        self.k = k

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: RecallConfig | dict[str, Any] | str | Path) -> RecallPipeline:
        """Build (unfitted) from a ``RecallConfig``, a dict or a YAML file."""
        if not isinstance(config, RecallConfig):
            config = recall_config(config)
        channels = []
        for c in config.channels:
            model = models.get(c.model, **c.params)
            if c.index is not None:
                from_dict(IndexConfig, c.index, where=f"channel {c.name!r} index").check()
            channels.append(Channel(c.name, model, int(c.quota), float(c.weight), c.index))
        fallback = None
        if config.fallback is not None:
            fallback = models.get(config.fallback, **config.fallback_params)
        return cls(channels, fallback=fallback, merge=config.merge, k=config.k)

    @property
    def is_fitted(self) -> bool:
        """Every channel's model (and its index, when it has one) and the fallback."""
        channels = all(
            getattr(c.model, "is_fitted", False) and (c.index is None or c.ann_ is not None)
            for c in self.channels
        )
        return channels and (self.fallback is None or getattr(self.fallback, "is_fitted", False))

    def fit(self, interactions: Interactions) -> RecallPipeline:
        """Fit every channel's model (and build its index), and the fallback; returns self."""
        for c in self.channels:
            log.info("recall: fitting channel %r (%s)", c.name, type(c.model).__name__)
            c.model.fit(interactions)
            c.ann_ = AnnRecommender(c.model, c.index) if c.index is not None else None
        if self.fallback is not None:
            self.fallback.fit(interactions)
        return self

    # ------------------------------------------------------------------ recommend
    def recommend(self, user_ids: Any, k: int | None = None) -> RecallResult:
        """Merged candidates for raw ``user_ids``: a ``RecallResult`` (module docstring).

        k: candidates per user (default: the pipeline's ``k``, else the sum of quotas).
        """
        if not self.is_fitted:
            raise NotFittedError(self, "recommend")
        from recforge.models.base import _as_list

        users = _as_list(user_ids)
        if k is None:
            k = self.k or sum(c.quota for c in self.channels)
        _check_k(k)  # k=0 raises here as it does in model.recommend
        parts = [self._channel_rows(ci, c, users) for ci, c in enumerate(self.channels)]
        if self.fallback is not None:
            parts.append(self._fallback_rows(users, k))
        long = (
            pd.concat([p for p in parts if len(p)], ignore_index=True)
            if any(len(p) for p in parts)
            else None
        )
        names = [c.name for c in self.channels]
        if long is None:
            return RecallResult(_empty_frame(names), users, names)
        frame = self._merge(long, k, names)
        frame.insert(0, "user", np.asarray(users, dtype=object)[frame["user_pos"].to_numpy()])
        return RecallResult(frame, users, names)

    def _channel_rows(self, ci: int, c: Channel, users: list[Any]) -> pd.DataFrame:
        """Long rows (user_pos, item, source, rank, score, norm) of one channel."""
        model = c.model
        u = model.user_vocab_.index(users, unknown="mask")
        known = np.flatnonzero(u >= 0)
        if len(known) == 0:
            return pd.DataFrame()
        idx, scores = c.retriever().recommend_idx(
            u[known], k=int(c.quota), exclude_seen=True
        )  # (B, q)
        return _rows(known, idx, scores, model.item_vocab_, ci, float(c.weight))

    def _fallback_rows(self, users: list[Any], k: int) -> pd.DataFrame:
        fb = self.fallback
        u = fb.user_vocab_.index(users, unknown="mask")
        known, cold = np.flatnonzero(u >= 0), np.flatnonzero(u < 0)
        parts = []
        src = len(self.channels)
        if len(known):
            idx, scores = fb.recommend_idx(u[known], k=k, exclude_seen=True)
            parts.append(_rows(known, idx, scores, fb.item_vocab_, src, 0.0))
        if len(cold):
            # the same global list for every cold user: the fallback's own scores when it is
            # user-independent (MostPopular), else training popularity (a personalised
            # fallback has no list for a user it never saw)
            if hasattr(fb, "item_scores_"):
                glob = np.asarray(fb.item_scores_, dtype=np.float32)
            else:
                glob = np.asarray(fb.seen_.sum(axis=0), dtype=np.float32).ravel()
            idx, scores = topk(glob[None, :], k)
            idx, scores = np.repeat(idx, len(cold), 0), np.repeat(scores, len(cold), 0)
            parts.append(_rows(cold, idx, scores, fb.item_vocab_, src, 0.0))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def _merge(self, long: pd.DataFrame, k: int, names: list[str]) -> pd.DataFrame:
        n_ch = len(self.channels)
        long["is_fb"] = long["source"] == n_ch
        # round-robin position: rank r of channel c comes at r * n_channels + c
        # (fallback rows come after every channel row)
        long["pos"] = long["rank"] * (n_ch + 1) + long["source"] + long["is_fb"] * (1 << 40)
        long["contrib"] = long["norm"] * long["weight"]
        long["bit"] = np.left_shift(1, long["source"].to_numpy()).astype(np.int64)
        g = long.groupby(["user_pos", "item"], sort=False)
        agg = g.agg(
            score=("contrib", "sum"),
            pos=("pos", "min"),
            only_fb=("is_fb", "all"),
            mask=("bit", "sum"),
        ).reset_index()
        agg["score"] = agg["score"].where(~agg["only_fb"], 0.0)
        if self.merge == "quota":
            agg = agg.sort_values(["user_pos", "only_fb", "pos"], kind="stable")
        else:
            agg = agg.sort_values(
                ["user_pos", "only_fb", "score", "pos"],
                ascending=[True, True, False, True],
                kind="stable",
            )
        agg["rank"] = agg.groupby("user_pos").cumcount()
        agg = agg[agg["rank"] < k]
        # provenance: channel names per mask, and each source's rank and score
        all_names = [*names, FALLBACK]
        masks = agg["mask"].to_numpy()
        lookup = {
            m: tuple(n for b, n in enumerate(all_names) if m >> b & 1) for m in np.unique(masks)
        }
        lookup = {
            m: (t if t == (FALLBACK,) else tuple(n for n in t if n != FALLBACK))
            for m, t in lookup.items()
        }
        agg["channels"] = [lookup[m] for m in masks]
        wide = long.pivot_table(
            index=["user_pos", "item"], columns="source", values=["rank", "score"], aggfunc="min"
        )
        out = agg[["user_pos", "item", "rank", "score", "channels"]].reset_index(drop=True)
        keys = pd.MultiIndex.from_frame(out[["user_pos", "item"]])
        for s, name in enumerate(all_names):
            for what in ("rank", "score"):
                col = (what, s)
                vals = (
                    wide[col].reindex(keys).to_numpy()
                    if col in wide.columns
                    else np.full(len(out), np.nan)
                )
                out[f"{name}_{what}"] = vals
        return out.reset_index(drop=True)

    # ------------------------------------------------------------------ online
    @property
    def catalogue_(self) -> IdVocab:
        """Every item any source knows (the item space of ``candidates``)."""
        return self._online().catalogue

    def _online(self) -> _Online:
        if getattr(self, "_online_", None) is None:
            if not self.is_fitted:
                raise NotFittedError(self, "candidates")
            self._online_ = _Online(self)
        return self._online_

    def candidates(
        self,
        user_id: Any,
        k: int | None = None,
        history: Any = (),
        exclude: np.ndarray | None = None,
        *,
        quotas: tuple[int, ...] | None = None,
        weights: tuple[float, ...] | None = None,
        merge: str | None = None,
    ) -> Candidates:
        """Merged candidates of one user, NumPy only: the online path of a server.

        The same channels, quotas, merge and fallback as ``recommend``. ``history``: raw item
        ids the user interacted with recently (oldest first), given at request time; channels
        whose model ``supports_history`` score from the training history plus these, the
        others from the training history only; for a user unknown to a channel, only the
        history-capable channels answer. Items in the training history, in ``history`` and
        in ``exclude`` (catalogue indices) are never returned. ``quotas`` / ``weights`` (one
        per channel, in order) and ``merge`` replace the pipeline's for this call (a server's
        runtime parameters); the pipeline itself is never changed.
        """
        on = self._online()
        quotas = quotas or tuple(int(c.quota) for c in self.channels)
        weights = weights or tuple(float(c.weight) for c in self.channels)
        if len(quotas) != len(self.channels) or len(weights) != len(self.channels):
            raise ConfigError("candidates: give one quota and one weight per channel.")
        if k is None:
            k = self.k or sum(quotas)
        _check_k(k)
        hist = [] if history is None else list(history)
        hist_cat = on.catalogue.get_many(hist) if hist else np.zeros(0, np.int64)
        unknown = [h for h, i in zip(hist, hist_cat) if i < 0]
        hist_cat = hist_cat[hist_cat >= 0]
        banned = np.concatenate(
            [hist_cat, np.asarray(exclude if exclude is not None else [], np.int64)]
        )
        lists = []
        for s, c in enumerate(self.channels):
            found = self._model_one(c.model, on.to_cat[s], user_id, hist, banned, quotas[s], c.ann_)
            if found is not None:
                lists.append((s, *found))
        cold = not lists
        if self.fallback is not None:
            fb_s = len(self.channels)
            u = self.fallback.user_vocab_.get(user_id)
            if u >= 0 and not hasattr(self.fallback, "item_scores_"):  # a personalised fallback
                found = self._model_one(self.fallback, on.to_cat[fb_s], user_id, [], banned, k)
            else:  # the global list, less what the user has seen
                seen = on.to_cat[fb_s][seen_row(self.fallback.seen_, u)] if u >= 0 else banned[:0]
                found = self._cold_one(on, np.concatenate([banned, seen]), k)
            lists.append((fb_s, *found))
        n_src = len(self.channels) + 1
        w = np.array([*weights, 0.0])
        items, score, rank, raw = merge_candidates(lists, n_src, w, merge or self.merge, k)
        names = [c.name for c in self.channels] + [FALLBACK]
        return Candidates(items, score, names, rank, raw, cold, unknown)

    @staticmethod
    def _model_one(model, to_cat, user_id, hist, banned, q, ann=None):
        """(items (q',) catalogue indices, scores) of one source for one user, or None when
        the source cannot answer (unknown user and no usable history)."""
        u = model.user_vocab_.get(user_id)
        h = model.item_vocab_.get_many(hist) if len(hist) else np.zeros(0, np.int64)
        h = h[h >= 0]
        if getattr(model, "supports_history", False) and (len(h) or u < 0):
            if u < 0 and not len(h):
                return None
            train_hist = seen_row(model.seen_, u) if u >= 0 else np.zeros(0, np.int64)
            full = np.concatenate([train_hist, h])
            idx, scores = model.recommend_from_history_idx(full, q + len(banned))
        elif u >= 0:
            fetch = q + len(banned)
            retr = ann if ann is not None else model
            idx, scores = retr.recommend_idx(np.array([u]), k=min(fetch, model.n_items))
            idx, scores = idx[0], scores[0]
        else:
            return None
        ok = (idx >= 0) & np.isfinite(scores)
        cat = to_cat[idx[ok]]
        scores = scores[ok]
        if len(banned):
            keep = ~np.isin(cat, banned)
            cat, scores = cat[keep], scores[keep]
        return cat[:q], scores[:q]

    @staticmethod
    def _cold_one(on: _Online, banned: np.ndarray, k: int):
        """The fallback's global list (catalogue indices) for a user it never saw."""
        take = on.cold_order[: k + len(banned)]
        scores = on.cold_scores[: k + len(banned)]
        cat = on.to_cat[-1][take]
        if len(banned):
            keep = ~np.isin(cat, banned)
            cat, scores = cat[keep], scores[keep]
        return cat[:k], scores[:k]

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """The pipeline as a JSON-safe config (model names, quotas, weights, indexes)."""
        return {
            "channels": [
                {
                    "name": c.name,
                    "model": c.model.name,
                    "quota": int(c.quota),
                    "weight": float(c.weight),
                    "index": None if c.index is None else _index_dict(c),
                }
                for c in self.channels
            ],
            "fallback": None if self.fallback is None else self.fallback.name,
            "merge": self.merge,
            "k": self.k,
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact directory (module docstring) atomically; returns its path."""
        if not self.is_fitted:
            raise NotFittedError(self, "save")
        path = Path(path)
        with atomic_dir(path, replaces=(MANIFEST,)) as tmp:
            for c in self.channels:
                c.model.save(tmp / "channels" / c.name / "model")
                if c.ann_ is not None:
                    c.ann_.index.save(tmp / "channels" / c.name / "index")
            if self.fallback is not None:
                self.fallback.save(tmp / FALLBACK)
            manifest = {
                "format": "recforge.recall",
                "format_version": FORMAT_VERSION,
                **self.config(),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return path

    @staticmethod
    def verify(path: str | Path) -> dict[str, Any]:
        """Check a saved pipeline without building any model: ``recall.json``, then every
        channel's model directory (``verify_artifact``) and index (``verify_index``), and
        the fallback. Returns the manifest; raises ``ArtifactError`` naming the file."""
        path = Path(path)
        manifest = _read_manifest(path)
        for c in manifest["channels"]:
            cdir = path / "channels" / c["name"]
            verify_artifact(cdir / "model")
            if c.get("index") is not None:
                verify_index(cdir / "index")
        if manifest.get("fallback"):
            verify_artifact(path / FALLBACK)
        return manifest

    @classmethod
    def load(cls, path: str | Path) -> RecallPipeline:
        """Read a directory written by ``save``."""
        path = Path(path)
        manifest = _read_manifest(path)
        channels = []
        for c in manifest["channels"]:
            cdir = path / "channels" / c["name"]
            model = models.load(cdir / "model")
            ch = Channel(c["name"], model, int(c["quota"]), float(c["weight"]), c.get("index"))
            if c.get("index") is not None:
                ch.ann_ = AnnRecommender(model, index=AnnIndex.load(cdir / "index"))
            channels.append(ch)
        fallback = models.load(path / FALLBACK) if manifest.get("fallback") else None
        return cls(channels, fallback=fallback, merge=manifest["merge"], k=manifest.get("k"))


def _safe_channel_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name)) and name != FALLBACK


def _read_manifest(path: Path) -> dict[str, Any]:
    """``recall.json``, checked for format version, channel entries and safe names."""
    mfile = path / MANIFEST
    if not mfile.exists():
        raise ArtifactError(f"{mfile}: missing; {path} is not a recall pipeline directory.")
    manifest = read_json(mfile)
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(f"{mfile}: format version {version!r} is newer than this recforge.")
    channels = manifest.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ArtifactError(f"{mfile}: 'channels' must be a non-empty list.")
    for i, c in enumerate(channels):
        if not isinstance(c, dict) or not {"name", "quota", "weight"} <= set(c):
            raise ArtifactError(f"{mfile}: channels[{i}] needs 'name', 'quota' and 'weight'.")
        if not _safe_channel_name(c["name"]):
            raise ArtifactError(
                f"{mfile}: channels[{i}] name {c['name']!r} is not a safe directory name; "
                f"the file was edited."
            )
    if "merge" not in manifest:
        raise ArtifactError(f"{mfile}: field 'merge' is missing.")
    return manifest


# ---------------------------------------------------------------------------- online path
@dataclass
class Candidates:
    """One user's merged candidates from ``RecallPipeline.candidates`` (NumPy, no pandas).

    items: (n,) catalogue indices (``pipeline.catalogue_``), merged order, best first.
    score: (n,) merged score (normalised weighted sum; 0 for fallback-only items).
    sources: names of the sources, the channels then ``"fallback"``.
    source_rank / source_score: (n, n_sources) float32, 0-based rank and raw score of the
    item in each source, NaN where the source did not return it.
    cold: no channel knew the user or could use the history (fallback only).
    unknown_history: raw history ids that no source knows (ignored).
    """

    items: np.ndarray
    score: np.ndarray
    sources: list[str]
    source_rank: np.ndarray
    source_score: np.ndarray
    cold: bool
    unknown_history: list[Any]

    def found_by(self, row: int) -> list[str]:
        """Names of the sources that returned candidate ``row`` (channels before fallback;
        ``["fallback"]`` only when no channel did)."""
        hit = [n for n, r in zip(self.sources, self.source_rank[row]) if not np.isnan(r)]
        chans = [n for n in hit if n != FALLBACK]
        return chans or hit


class _Online:
    """Per-pipeline lookup tables for ``candidates``: one catalogue over every source's items
    and each source's item index -> catalogue index."""

    def __init__(self, pipe: RecallPipeline) -> None:
        models_ = [c.model for c in pipe.channels] + (
            [pipe.fallback] if pipe.fallback is not None else []
        )
        ids = np.concatenate([m.item_vocab_.raw_ids for m in models_])
        self.catalogue = IdVocab(ids, kind="item")
        self.to_cat = [self.catalogue.index(m.item_vocab_.raw_ids) for m in models_]
        fb = pipe.fallback
        if fb is not None:
            if hasattr(fb, "item_scores_"):
                glob = np.asarray(fb.item_scores_, dtype=np.float32)
            else:
                glob = np.asarray(fb.seen_.sum(axis=0), dtype=np.float32).ravel()
            self.cold_order = np.argsort(-glob, kind="stable")
            self.cold_scores = glob[self.cold_order]


def merge_candidates(
    lists: list[tuple[int, np.ndarray, np.ndarray]],
    n_sources: int,
    weights: np.ndarray,
    merge: str,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge ranked lists of one user the way ``RecallPipeline.recommend`` does.

    lists: (source, items (q,) catalogue indices best first, scores (q,)); the last source
    (``n_sources - 1``) is the fallback. Returns (items (n,), merged score (n,),
    source_rank (n, n_sources), source_score (n, n_sources)), n <= k.
    """
    fb = n_sources - 1
    parts = [(s, it, sc) for s, it, sc in lists if len(it)]
    if not parts:
        empty = np.zeros((0, n_sources), np.float32)
        return np.zeros(0, np.int64), np.zeros(0, np.float32), empty, empty
    items = np.concatenate([it for _, it, _ in parts])
    src = np.concatenate([np.full(len(it), s, np.int64) for s, it, _ in parts])
    rank = np.concatenate([np.arange(len(it), dtype=np.int64) for _, it, _ in parts])
    raw = np.concatenate([sc for _, _, sc in parts]).astype(np.float64)
    norm = np.concatenate([_minmax(sc.astype(np.float64)) for _, _, sc in parts])
    is_fb = src == fb
    pos = rank * n_sources + src + is_fb * (1 << 40)  # round-robin place; fallback last
    contrib = norm * weights[src]
    order = np.lexsort((pos, items))
    first = np.r_[True, items[order][1:] != items[order][:-1]]
    group = np.cumsum(first) - 1  # merged row of each sorted entry
    n = int(group[-1]) + 1
    uniq, minpos = items[order][first], pos[order][first]
    score = np.bincount(group, weights=contrib[order], minlength=n)
    only_fb = np.bincount(group, weights=~is_fb[order], minlength=n) == 0
    score = np.where(only_fb, 0.0, score)
    if merge == "quota":
        keep = np.lexsort((minpos, only_fb))
    else:
        keep = np.lexsort((minpos, -score, only_fb))
    keep = keep[:k]
    rows = np.full(n, -1, np.int64)
    rows[keep] = np.arange(len(keep))
    s_rank = np.full((len(keep), n_sources), np.nan, np.float32)
    s_score = np.full((len(keep), n_sources), np.nan, np.float32)
    r = rows[group]
    ok = r >= 0
    s_rank[r[ok], src[order][ok]] = rank[order][ok]
    s_score[r[ok], src[order][ok]] = raw[order][ok]
    return uniq[keep], score[keep].astype(np.float32), s_rank, s_score


def _minmax(s: np.ndarray) -> np.ndarray:
    """Min-max normalised scores in [0, 1] (1 when all are equal), as ``_rows`` does."""
    if not len(s):
        return s
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)


def _index_dict(c: Channel) -> dict[str, Any]:
    if c.ann_ is not None:
        return asdict(c.ann_.index.config)
    return asdict(c.index) if isinstance(c.index, IndexConfig) else dict(c.index)  # type: ignore[arg-type]


def _rows(
    user_pos: np.ndarray,
    idx: np.ndarray,
    scores: np.ndarray,
    item_vocab: Any,
    source: int,
    weight: float,
) -> pd.DataFrame:
    """Flatten (B, q) results into long rows, dropping empty (-1 / -inf) slots; ``norm`` is
    the per-row min-max normalised score in [0, 1] (1 when all scores are equal)."""
    valid = (idx >= 0) & np.isfinite(scores)
    s = np.where(valid, scores, np.nan).astype(np.float64)
    with np.errstate(all="ignore"):
        lo, hi = (
            np.nanmin(np.where(valid, s, np.inf), axis=1),
            np.nanmax(np.where(valid, s, -np.inf), axis=1),
        )
        span = hi - lo
        norm = np.where(
            span[:, None] > 0, (s - lo[:, None]) / np.where(span > 0, span, 1.0)[:, None], 1.0
        )
    b, r = np.nonzero(valid)
    return pd.DataFrame(
        {
            "user_pos": user_pos[b],
            "item": item_vocab.ids(idx[b, r]),
            "source": np.full(len(b), source, dtype=np.int64),
            "rank": r.astype(np.int64),
            "score": s[b, r],
            "norm": norm[b, r],
            "weight": np.full(len(b), weight),
        }
    )


def _empty_frame(names: list[str]) -> pd.DataFrame:
    cols = ["user", "user_pos", "item", "rank", "score", "channels"]
    for n in [*names, FALLBACK]:
        cols += [f"{n}_rank", f"{n}_score"]
    return pd.DataFrame(columns=cols)


# ---------------------------------------------------------------------------- evaluation
def evaluate_recall(
    pipeline: RecallPipeline, test: Interactions, ks: tuple[int, ...] = (100, 200, 500)
) -> dict[str, Any]:
    """Recall of the merged candidate set, and what each channel adds.

    test: held-out interactions (every distinct (user, item) is relevant; users unknown to
    the pipeline are evaluated too, on the fallback). Returns ``{"recall@100": ..., ...,
    "channel_recall@K/<name>": recall of the candidates that channel found,
    "unique_recall@K/<name>": recall of hits found by that channel only,
    "unique_hits/<name>": count of those hits, "fallback_recall@K": hits found only by
    the fallback, "n_users": ...}`` with K = max(ks).
    """
    if not isinstance(test, Interactions) or len(test) == 0:
        raise DataError("evaluate_recall: test must be a non-empty Interactions.")
    ks = tuple(sorted({int(k) for k in ks}))
    kmax = ks[-1]
    pairs = test.frame[["user", "item"]].drop_duplicates()
    users = list(pd.unique(pairs["user"]))
    n_rel = pairs.groupby("user", sort=False).size().reindex(users).to_numpy(dtype=np.float64)
    result = pipeline.recommend(users, k=kmax)
    frame = result.frame
    hits = frame.merge(pairs.assign(_hit=True), on=["user", "item"], how="left")
    hits = hits[hits["_hit"].fillna(False).astype(bool)]
    user_pos = hits["user_pos"].to_numpy(dtype=np.int64)  # object dtype when empty
    out: dict[str, Any] = {"n_users": len(users), "n_relevant": int(n_rel.sum())}

    def mean_recall(mask: np.ndarray) -> float:
        per_user = np.bincount(user_pos[mask], minlength=len(users)) / n_rel
        return float(per_user.mean())

    ranks = hits["rank"].to_numpy()
    for k in ks:
        out[f"recall@{k}"] = mean_recall(ranks < k)
    chans = hits["channels"].tolist()
    for name in result.channel_names:
        found = np.array([name in t for t in chans], dtype=bool)
        only = np.array([t == (name,) for t in chans], dtype=bool)
        out[f"channel_recall@{kmax}/{name}"] = mean_recall(found)
        out[f"unique_recall@{kmax}/{name}"] = mean_recall(only)
        out[f"unique_hits/{name}"] = int(only.sum())
    fb = np.array([t == (FALLBACK,) for t in chans], dtype=bool)
    out[f"fallback_recall@{kmax}"] = mean_recall(fb) if len(chans) else 0.0
    return out
