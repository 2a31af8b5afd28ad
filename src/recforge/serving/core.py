"""The serving core: a bundle in, the funnel per request, ranked items out.

    rec = Recommender.load("runs/bundle")
    rec.recommend("u42", k=20, history=[17, 3], context={"device": "mobile"},
                  filters={"category": ["c1"]}, explain=True)

One request runs: recall channels (request-time history where the model can use it) ->
merge/dedupe/quota -> filters (item feature values, exclude ids; seen and history items are
never candidates) -> feature join -> ranker on the best ``rank_top`` candidates -> re-rank
(MMR diversity with a lambda, when configured) -> top-k with scores. Filters run before the
ranker so that it scores only items that can be returned.

No HTTP or gRPC here: the REST app, the gRPC server and a notebook call the same methods.
The request path is NumPy over arrays prepared at load (the user and item feature tables
are encoded once); no pandas, and torch's thread count is never changed per call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.data.features import CATEGORICAL, MULTI, NUMERIC, EncodedFeatures
from recforge.data.vocab import IdVocab
from recforge.exceptions import ConfigError, DataError, UnknownIdError
from recforge.pipeline.candidate_features import (
    cross_parts,
    cross_values,
    missing_recall_columns,
    recall_columns,
)
from recforge.serving.bundle import Bundle, RerankConfig
from recforge.serving.runtime import RuntimeParams

log = logging.getLogger(__name__)


@dataclass
class Recommendation:
    """The answer to one recommend call. ``trace`` is filled when ``explain=True``."""

    user: Any
    items: list[Any]
    scores: list[float]
    version: str
    cold: bool
    trace: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "user": self.user,
            "items": [{"item": i, "score": s} for i, s in zip(self.items, self.scores)],
            "version": self.version,
            "cold": self.cold,
        }
        if self.trace is not None:
            out["trace"] = self.trace
        return out


@dataclass
class _Side:
    """One side's (user or item) encoded ranker fields: per field, codes for every row."""

    index: pd.Index  # raw ids of the rows
    cat: dict[int, np.ndarray] = field(default_factory=dict)  # categorical column j -> (n,)
    num: dict[int, np.ndarray] = field(default_factory=dict)  # numeric column j -> (n,)
    multi: dict[str, np.ndarray] = field(default_factory=dict)  # multi field -> (n, L)


@dataclass(frozen=True)
class _Runtime:
    """The parameters one request runs with: the bundle's, with the runtime overrides
    (``recforge.serving.runtime``) applied. Replaced whole, never mutated: a request reads
    ``Recommender._rt`` once and keeps that object to its end."""

    rerank: RerankConfig
    quotas: tuple[int, ...] | None = None  # per channel, in channel order
    weights: tuple[float, ...] | None = None
    merge: str | None = None
    recall_k: int | None = None
    allow: dict[str, list[Any]] = field(default_factory=dict)  # item column -> allowed values
    deny: dict[str, list[Any]] = field(default_factory=dict)  # item column -> banned values
    deny_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # catalogue
    params: dict[str, Any] = field(default_factory=dict)  # what the runtime overrides


class Recommender:
    """The funnel of one bundle (module docstring). Thread-safe for concurrent reads; the
    runtime parameters change by ``use_runtime(prepare_runtime(params))`` between requests."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.pipeline = bundle.pipeline
        self.ranker = bundle.ranker
        self.rerank = bundle.rerank
        self.catalogue = self.pipeline.catalogue_
        self._id_kind = {
            "user": _kind_of(self.pipeline.fallback.user_vocab_.raw_ids)
            if self.pipeline.fallback is not None
            else _kind_of(self.pipeline.channels[0].model.user_vocab_.raw_ids),
            "item": _kind_of(self.catalogue.raw_ids),
        }
        self._prepare_items()
        self._prepare_ranker()
        self._rt = _Runtime(self.rerank)
        self.precomputed: Any = None  # serving.precomputed.Precomputed, set by use_precomputed

    def use_precomputed(self, store: Any) -> None:
        """Answer plain requests from ``store`` (``serving.precomputed``) while it is fresh;
        refuses lists computed over another bundle version."""
        store.check_source(self.bundle.version)
        self.precomputed = store

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Verify and load a bundle directory (``recforge.serving.bundle``), or a saved
        retrieval model / recall pipeline directory served as one (``serving.single``)."""
        from recforge.serving.single import load_servable

        return cls(load_servable(path))

    # ------------------------------------------------------------------ preparation
    def _prepare_items(self) -> None:
        table = self.bundle.item_table
        ids = self.catalogue.raw_ids
        self.item_values: dict[str, np.ndarray] = {}  # filterable columns, catalogue-aligned
        if table is not None:
            aligned = table.reindex(ids)
            for col in aligned.columns:
                if _scalar_column(aligned[col]):
                    self.item_values[col] = aligned[col].to_numpy(dtype=object)
        self.filter_fields = sorted(self.item_values)

    def _prepare_ranker(self) -> None:
        self.fields = self.bundle.fields
        if self.ranker is None:
            return
        enc = self.ranker.encoder_
        self._enc = enc
        self._cat_fields = enc.fields_of(CATEGORICAL)
        self._num_fields = enc.fields_of(NUMERIC)
        self._multi_fields = enc.fields_of(MULTI)
        # recall features and crosses (recforge.pipeline.candidate_features), per request
        self._request_fields = {
            n: v for n, v in self.fields.items() if v["source"] in ("recall", "cross")
        }
        tables = [t for t in (self.bundle.item_table, self.bundle.user_table) if t is not None]
        cross_ctx = {
            p
            for v in self._request_fields.values()
            if v["source"] == "cross"
            for p in cross_parts(v["column"])
            if not any(p in t.columns for t in tables)
        }
        self.context_fields = sorted(
            {v["column"] for v in self.fields.values() if v["source"] == "context"} | cross_ctx
        )
        items = self.catalogue.raw_ids
        item_frame = pd.DataFrame({"item": pd.Series(items, dtype=object)})
        if self.bundle.item_table is not None:
            aligned = self.bundle.item_table.reindex(items).reset_index(drop=True)
            item_frame = pd.concat([item_frame, aligned], axis=1)
        self._items = self._encode_side(("item", "item_id"), item_frame, pd.Index(items))
        # one-value lookups of the request (user id, context) by dict, not pandas
        self._codes = {
            f.name: IdVocab(enc.vocabulary(f.name), kind=f.name)
            for f in self._cat_fields
            if f.source is None and self.fields[f.name]["source"] in ("user_id", "context")
        }
        users = self.bundle.user_table
        if users is not None:
            user_frame = users.reset_index(drop=True)
            self._users = self._encode_side(("user",), user_frame, users.index)
        else:
            self._users = _Side(pd.Index([]))
        self._users_pos = (
            IdVocab(self._users.index, kind="user") if len(self._users.index) else None
        )
        self._onnx = None
        onnx = self.bundle.manifest.get("onnx")
        if onnx:  # the bundle carries the ranker as ONNX (checksummed with the rest)
            from recforge.export import OnnxRanker

            self._onnx = OnnxRanker(self.bundle.path / onnx, num_threads=1)
        self._use_encoded = True
        try:  # rankers without the encoded path are served through predict_proba(frame)
            self.ranker.predict_proba_encoded(self._assemble(np.zeros(1, np.int64), None, {}))
        except NotImplementedError:
            self._use_encoded = False

    def _encode_side(self, sources: tuple[str, ...], frame: pd.DataFrame, index: pd.Index) -> _Side:
        side = _Side(index)
        for group, fields in ((side.cat, self._cat_fields), (side.num, self._num_fields)):
            for j, f in enumerate(fields):
                spec = self.fields[f.name]
                if spec["source"] in sources:
                    col = spec["column"]
                    values = frame[col] if col in frame else pd.Series([None] * len(frame))
                    group[j] = self._enc.encode_field(f, values)
        for f in self._multi_fields:
            spec = self.fields[f.name]
            if spec["source"] in sources and spec["column"] in frame:
                side.multi[f.name] = self._enc.encode_field(f, frame[spec["column"]])
        return side

    # ------------------------------------------------------------------ ids
    def _coerce(self, raw: Any, kind: str) -> Any:
        """A request id in the vocabulary's type: "42" -> 42 for integer ids, 42 -> "42"
        for string ids (JSON and gRPC carry ids as given by the client)."""
        want = self._id_kind[kind]
        if want == "int" and isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                return raw
        if want == "str" and isinstance(raw, int | np.integer) and not isinstance(raw, bool):
            return str(raw)
        return raw

    def _coerce_list(self, raw: Any, kind: str) -> list[Any]:
        if raw is None:
            return []
        if isinstance(raw, str | bytes) or np.isscalar(raw):
            raw = [raw]
        return [self._coerce(r, kind) for r in raw]

    def _out_id(self, x: Any) -> Any:
        return x.item() if isinstance(x, np.generic) else x

    # ------------------------------------------------------------------ recommend
    def recommend(
        self,
        user: Any,
        k: int = 20,
        *,
        history: Any = None,
        context: dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
        exclude: Any = None,
        explain: bool = False,
    ) -> Recommendation:
        """Top-k items for ``user`` (a raw id; unknown users get the fallback, never an
        error). history: recent raw item ids (oldest first) given at request time; unknown
        ones are ignored and listed in the trace. context: request-time ranker features
        (``context_fields``). filters: item feature column -> allowed value(s). exclude:
        raw item ids never to return."""
        t = [time.perf_counter()]
        rt = self._rt  # the runtime parameters of this request, to its end
        k = self._check_k(k, rt)
        user = self._coerce(user, "user")
        context = self._check_context(context)
        allowed = self._check_filters(filters)
        excl_ids = self._coerce_list(exclude, "item")
        excl = self.catalogue.get_many(excl_ids) if excl_ids else np.zeros(0, np.int64)
        excl = np.concatenate([excl[excl >= 0], rt.deny_items])
        hist = self._coerce_list(history, "item")
        if self.precomputed is not None and not (
            hist or context or allowed or excl_ids or explain or rt.params
        ):
            hit = self.precomputed.get(user, k)
            if hit is not None:
                items = [self._out_id(i) for i in hit[0]]
                return Recommendation(self._out_id(user), items, hit[1], self.bundle.version, False)

        cand = self.pipeline.candidates(
            user,
            k=rt.recall_k,
            history=hist,
            exclude=excl,
            quotas=rt.quotas,
            weights=rt.weights,
            merge=rt.merge,
        )
        t.append(time.perf_counter())  # recall

        keep = np.ones(len(cand.items), dtype=bool)
        for rules in (allowed, rt.allow):
            for col, values in rules.items():
                keep &= np.isin(self.item_values[col][cand.items], values)
        for col, values in rt.deny.items():
            keep &= ~np.isin(self.item_values[col][cand.items], values)
        rows = np.flatnonzero(keep)
        t.append(time.perf_counter())  # filter

        top = rows[: rt.rerank.rank_top]
        if self.ranker is not None and len(top):
            x = self._assemble(cand.items[top], user, context, (cand, top))
            t.append(time.perf_counter())  # features
            rank_scores = self._rank(x, cand.items[top], user, context)
        else:
            t.append(time.perf_counter())
            rank_scores = cand.score[top].astype(np.float64)
        t.append(time.perf_counter())  # rank

        order = self._rerank(cand.items[top], rank_scores, k, rt.rerank)
        final = top[order]
        t.append(time.perf_counter())  # rerank
        items = [self._out_id(i) for i in self.catalogue.ids(cand.items[final])]
        scores = [float(s) for s in np.asarray(rank_scores)[order]]
        trace = None
        if explain:
            trace = self._trace(cand, rows, top, final, rank_scores, order, t, hist)
        return Recommendation(
            self._out_id(user), items, scores, self.bundle.version, cand.cold, trace
        )

    def _rank(self, x: EncodedFeatures, items: np.ndarray, user: Any, context: dict) -> np.ndarray:
        if self._onnx is not None:
            p = self._onnx.predict_proba_encoded(x)
        elif self._use_encoded:
            p = self.ranker.predict_proba_encoded(x)
        else:
            p = self.ranker.predict_proba(self._frame(items, user, context))
        p = np.asarray(p, dtype=np.float64)
        return p[:, 0] if p.ndim == 2 else p  # multi-task rankers: the first task

    def _rerank(
        self, items: np.ndarray, scores: np.ndarray, k: int, rules: RerankConfig
    ) -> np.ndarray:
        """Positions into ``items`` of the final list: best score first, or MMR."""
        scores = np.asarray(scores, dtype=np.float64)
        if rules.mmr_lambda <= 0 or len(items) <= 1:
            return np.argsort(-scores, kind="stable")[:k]
        lam = rules.mmr_lambda
        values = self.item_values[rules.diversity_field][items]
        codes = pd.factorize(values)[0]
        lo, hi = scores.min(), scores.max()
        rel = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        chosen: list[int] = []
        covered = np.zeros(codes.max() + 2, dtype=bool)
        left = np.ones(len(items), dtype=bool)
        for _ in range(min(k, len(items))):
            sim = covered[codes].astype(np.float64)  # 1 if an item of that value is chosen
            mmr = np.where(left, (1 - lam) * rel - lam * sim, -np.inf)
            j = int(np.argmax(mmr))
            chosen.append(j)
            left[j] = False
            covered[codes[j]] = True
        return np.asarray(chosen, dtype=np.int64)

    def _trace(self, cand, rows, top, final, rank_scores, order, t, hist) -> dict[str, Any]:
        stages = ["recall", "filter", "features", "rank", "rerank"]
        ms = {s: round((b - a) * 1e3, 3) for s, a, b in zip(stages, t, t[1:])}
        ms["total"] = round((t[-1] - t[0]) * 1e3, 3)
        items = []
        for pos, (row, j) in enumerate(zip(final, order)):
            chans = {}
            for s, name in enumerate(cand.sources):
                r = cand.source_rank[row, s]
                if not np.isnan(r):
                    chans[name] = {"rank": int(r), "score": float(cand.source_score[row, s])}
            items.append(
                {
                    "item": self._out_id(self.catalogue.ids([cand.items[row]])[0]),
                    "position": pos,
                    "found_by": cand.found_by(row),
                    "channels": chans,
                    "recall_rank": int(row),
                    "recall_score": float(cand.score[row]),
                    "ranker_score": float(rank_scores[j]) if self.ranker is not None else None,
                }
            )
        return {
            "version": self.bundle.version,
            "cold": cand.cold,
            "unknown_history": [self._out_id(h) for h in cand.unknown_history],
            "history_used": len(hist) - len(cand.unknown_history),
            "n_recalled": int(len(cand.items)),
            "n_after_filters": int(len(rows)),
            "n_ranked": int(len(top)),
            "ranker": getattr(self.ranker, "name", None),
            "stage_ms": ms,
            "items": items,
        }

    # ------------------------------------------------------------------ score / similar
    def score(
        self, user: Any, items: Any, *, context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Ranker scores of caller-supplied candidate ``items`` for ``user``, in the given
        order. Items the bundle does not know are scored with unknown item features and
        listed under ``unknown_items``."""
        if self.ranker is None:
            raise ConfigError("this bundle has no ranker: score needs one.")
        user = self._coerce(user, "user")
        ids = self._coerce_list(items, "item")
        if not ids:
            raise DataError("items: give at least one item id to score.", column="items")
        max_k = self._rt.rerank.max_k
        if len(ids) > max_k * 10:
            raise DataError(f"items: at most {max_k * 10} items per call.", column="items")
        context = self._check_context(context)
        idx = self.catalogue.index(ids, unknown="mask")
        cand_rows = None
        if any(v["source"] == "recall" for v in self._request_fields.values()):
            cand = self.pipeline.candidates(user)  # where recall put each item, if it did
            at = {int(i): r for r, i in enumerate(cand.items)}
            cand_rows = (cand, np.array([at.get(int(i), -1) for i in idx], dtype=np.int64))
        x = self._assemble(idx, user, context, cand_rows)
        p = self._rank(x, idx, user, context)
        return {
            "user": self._out_id(user),
            "items": [{"item": self._out_id(i), "score": float(s)} for i, s in zip(ids, p)],
            "unknown_items": [self._out_id(i) for i, j in zip(ids, idx) if j < 0],
            "version": self.bundle.version,
        }

    def similar(self, item: Any, k: int = 10) -> dict[str, Any]:
        """Items like ``item`` from the first channel whose model has item similarity.
        Raises ``UnknownIdError`` for an item the bundle does not know."""
        k = self._check_k(k, self._rt)
        item = self._coerce(item, "item")
        for c in self.pipeline.channels:
            model = c.model
            if item not in model.item_vocab_:
                continue
            try:
                ids, scores = model.similar_items([item], k=min(k, model.n_items - 1))
            except NotImplementedError:
                continue
            ok = np.isfinite(scores[0])
            return {
                "item": self._out_id(item),
                "channel": c.name,
                "items": [
                    {"item": self._out_id(i), "score": float(s)}
                    for i, s in zip(ids[0][ok], scores[0][ok])
                ],
                "version": self.bundle.version,
            }
        if item not in self.catalogue:
            raise UnknownIdError("item", [item])
        raise ConfigError("no channel of this bundle has an item similarity for this item.")

    def info(self) -> dict[str, Any]:
        """What is loaded: version, parts, fields and their sources, rules, metrics."""
        m = self.bundle.manifest
        return {
            "name": m.get("name"),
            "version": m["version"],
            "created": m.get("created"),
            "path": str(self.bundle.path),
            "channels": [
                {
                    "name": c.name,
                    "model": c.model.name,
                    "quota": c.quota,
                    "index": c.ann_ is not None,
                }
                for c in self.pipeline.channels
            ],
            "fallback": getattr(self.pipeline.fallback, "name", None),
            "ranker": getattr(self.ranker, "name", None),
            "scorer": None if self.ranker is None else "onnxruntime" if self._onnx else "torch",
            "n_items": len(self.catalogue),
            "fields": self.fields,
            "context_fields": getattr(self, "context_fields", []),
            "filter_fields": self.filter_fields,
            "rerank": m["rerank"],
            "runtime": self._rt.params,
            "precomputed": None if self.precomputed is None else self.precomputed.describe(),
            "metrics": m.get("metrics", {}),
        }

    # ------------------------------------------------------------------ runtime parameters
    def prepare_runtime(self, params: RuntimeParams | None) -> _Runtime:
        """Check runtime ``params`` against this bundle and build what requests read; raises
        ``ConfigError`` naming the field (a channel this bundle lacks, a column that is not
        an item feature). Changes nothing: ``use_runtime`` swaps the result in."""
        if params is None:
            return _Runtime(self.rerank)
        names = [c.name for c in self.pipeline.channels]
        for name in params.channels:
            if name not in names:
                raise ConfigError(
                    f"channels.{name}: this bundle has no recall channel {name!r}; "
                    f"its channels: {names}."
                )
        columns = self.filter_fields
        groups = (("filters", params.filters), ("exclude", params.exclude))
        for group, rules in groups:
            for col in rules:
                if col not in self.item_values:
                    raise ConfigError(
                        f"{group}.{col}: not an item feature of this bundle; item fields: "
                        f"{columns}."
                    )
        over = {
            k: getattr(params, k)
            for k in ("max_k", "rank_top", "mmr_lambda", "diversity_field")
            if getattr(params, k) is not None
        }
        try:
            rules = replace(self.rerank, **over).check(columns)
        except ConfigError as e:
            raise ConfigError(str(e).removeprefix("rerank.")) from None
        if rules.diversity_field is not None and rules.diversity_field not in self.item_values:
            raise ConfigError(
                f"diversity_field: {rules.diversity_field!r} has non-scalar values; "
                f"item fields: {columns}."
            )
        chans = self.pipeline.channels
        quotas = weights = None
        if params.channels:
            by = params.channels
            quotas = tuple(
                int(by[c.name].quota if c.name in by and by[c.name].quota else c.quota)
                for c in chans
            )
            weights = tuple(
                float(
                    by[c.name].weight
                    if c.name in by and by[c.name].weight is not None
                    else c.weight
                )
                for c in chans
            )
        deny = self.catalogue.get_many(self._coerce_list(params.exclude_items, "item"))
        return _Runtime(
            rules,
            quotas,
            weights,
            params.merge,
            params.recall_k,
            {c: list(v) for c, v in params.filters.items()},
            {c: list(v) for c, v in params.exclude.items()},
            deny[deny >= 0].astype(np.int64),
            {**params.as_dict(), "in_force": asdict(rules)},
        )

    def use_runtime(self, prepared: _Runtime) -> None:
        """Serve the next requests with ``prepared`` (from ``prepare_runtime``); requests in
        flight finish with the parameters they started with."""
        self._rt = prepared

    def warmup(self) -> dict[str, Any]:
        """One request for a known user, one for a cold user: raises unless every score is
        finite; returns their latencies in ms (the gate before a version takes traffic)."""
        out = {}
        users = [self.pipeline.channels[0].model.user_vocab_.raw_ids[0], "__recforge_cold__"]
        for label, user in zip(("known", "cold"), users):
            t0 = time.perf_counter()
            rec = self.recommend(user, k=min(10, len(self.catalogue), self._rt.rerank.max_k))
            out[f"{label}_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
            if not rec.items or not np.isfinite(rec.scores).all():
                raise ConfigError(
                    f"warm-up: the {label} user's recommendation has no finite scores."
                )
        return out

    # ------------------------------------------------------------------ features
    def _assemble(
        self, items: np.ndarray, user: Any, context: dict[str, Any], cand: Any = None
    ) -> EncodedFeatures:
        """The ranker's encoded input for candidate catalogue indices ``items`` (-1: an item
        the bundle does not know) of one raw ``user`` (unknown users: unknown features).
        cand: (Candidates, rows): where each item sits in the request's recall (row -1:
        not recalled), for rankers trained with recall features."""
        n = len(items)
        known = items >= 0
        safe = np.where(known, items, 0)
        urow = self._users_pos.get(user) if self._users_pos is not None else -1
        request = self._request_columns(items, user, context, cand) if self._request_fields else {}

        def one(f: Any, j: int, item_cols: dict, user_cols: dict) -> np.ndarray:
            spec = self.fields[f.name]
            if spec["source"] in ("recall", "cross"):
                return self._enc.encode_field(f, pd.Series(request[spec["column"]]))
            if j in item_cols:
                return np.where(known, item_cols[j][safe], 0)
            if j in user_cols:
                return np.full(n, user_cols[j][urow] if urow >= 0 else 0)
            if spec["source"] == "user_id":
                value = user
            elif spec["source"] == "context":
                value = context.get(spec["column"])
            else:  # a table column the bundle does not hold
                value = None
            if f.name in self._codes:
                return np.full(n, self._codes[f.name].get(value) + 1)
            return np.full(n, self._enc.encode_field(f, pd.Series([value], dtype=object))[0])

        cat = np.zeros((n, len(self._cat_fields)), dtype=np.int64)
        for j, f in enumerate(self._cat_fields):
            cat[:, j] = one(f, j, self._items.cat, self._users.cat)
        num = np.zeros((n, len(self._num_fields)), dtype=np.float32)
        for j, f in enumerate(self._num_fields):
            num[:, j] = one(f, j, self._items.num, self._users.num)
        multi: dict[str, np.ndarray] = {}
        for f in self._multi_fields:
            spec = self.fields[f.name]
            if f.name in self._items.multi:
                m = self._items.multi[f.name][safe]
                m[~known] = 0
            elif f.name in self._users.multi and urow >= 0:
                m = np.repeat(self._users.multi[f.name][urow][None, :], n, axis=0)
            elif spec["source"] == "context" and spec["column"] in context:
                v = self._enc.encode_field(f, pd.Series([[context[spec["column"]]]], dtype=object))
                m = np.repeat(v, n, axis=0)
            else:
                m = np.zeros((n, f.max_len), dtype=np.int64)
            multi[f.name] = m
        return EncodedFeatures(cat, num, multi)

    def _request_columns(
        self, items: np.ndarray, user: Any, context: dict[str, Any], cand: Any
    ) -> dict[str, np.ndarray]:
        """Raw values of the recall and cross columns for ``items`` (``_assemble``)."""
        n = len(items)
        out: dict[str, np.ndarray] = {}
        recall = [v["column"] for v in self._request_fields.values() if v["source"] == "recall"]
        if recall:
            if cand is None:
                out.update(missing_recall_columns(recall, n, 1))
            else:
                c, rows = cand
                found = rows >= 0
                out.update(missing_recall_columns(recall, n, len(c.items)))
                got = recall_columns(c, rows[found])
                for col in recall:
                    if col in got:
                        out[col][found] = got[col]
        users = self.bundle.user_table
        for v in self._request_fields.values():
            parts = cross_parts(v["column"]) if v["source"] == "cross" else None
            if parts is None:
                continue
            values = []
            for p in parts:
                if p in self.item_values:
                    col = self.item_values[p][np.where(items >= 0, items, 0)].copy()
                    col[items < 0] = None
                elif users is not None and p in users.columns:
                    col = np.full(n, users[p].get(user) if user in users.index else None, object)
                else:
                    col = np.full(n, context.get(p), dtype=object)
                values.append(col)
            out[v["column"]] = cross_values(values)
        return out

    def _frame(self, items: np.ndarray, user: Any, context: dict[str, Any]) -> pd.DataFrame:
        """The ranker's input as a DataFrame (rankers without ``predict_proba_encoded``)."""
        ids = [self.catalogue.raw_ids[i] if i >= 0 else None for i in items]
        frame = pd.DataFrame({"user": [user] * len(ids), "item": ids})
        if self.bundle.item_table is not None:
            it = self.bundle.item_table.reindex(ids).reset_index(drop=True)
            frame = pd.concat([frame, it], axis=1)
        if self.bundle.user_table is not None:
            ut = self.bundle.user_table.reindex([user] * len(ids)).reset_index(drop=True)
            frame = pd.concat([frame, ut], axis=1)
        for name, spec in self.fields.items():
            col = spec["column"]
            if spec["source"] == "context":
                frame[col] = context.get(col)
            elif name not in frame and col in frame:
                frame[name] = frame[col]
        return frame

    # ------------------------------------------------------------------ checks
    def _check_k(self, k: Any, rt: _Runtime) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise DataError(f"k: must be a positive integer, got {k!r}.", column="k")
        if k > rt.rerank.max_k:
            raise DataError(f"k: at most {rt.rerank.max_k}, got {k}.", column="k")
        return int(k)

    def _check_context(self, context: dict[str, Any] | None) -> dict[str, Any]:
        context = dict(context or {})
        valid = getattr(self, "context_fields", [])
        for key, value in context.items():
            if key not in valid:
                raise DataError(
                    f"context: unknown field {key!r}; this bundle's context fields are {valid}.",
                    column=f"context.{key}",
                )
            if not _is_scalar(value):
                raise DataError(
                    f"context.{key}: expected a string or a number, got {type(value).__name__}.",
                    column=f"context.{key}",
                )
        return context

    def _check_filters(self, filters: dict[str, Any] | None) -> dict[str, list[Any]]:
        out = {}
        for key, values in (filters or {}).items():
            if key not in self.item_values:
                raise DataError(
                    f"filters: unknown item field {key!r}; filterable fields: {self.filter_fields}.",
                    column=f"filters.{key}",
                )
            values = values if isinstance(values, list | tuple) else [values]
            if not all(_is_scalar(v) for v in values):
                raise DataError(
                    f"filters.{key}: values must be strings or numbers.", column=f"filters.{key}"
                )
            out[key] = list(values)
        return out


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool | np.generic)


_SCALAR_KINDS = {"string", "integer", "floating", "mixed-integer-float", "boolean", "empty"}


def _scalar_column(col: pd.Series) -> bool:
    """Whether every value is a scalar (a filterable item column): by dtype or pandas'
    type inference in C, per value in Python only for mixed object columns (a load of a
    large catalogue then holds the interpreter for less)."""
    if col.dtype != object:
        return True
    if pd.api.types.infer_dtype(col, skipna=True) in _SCALAR_KINDS:
        return True
    return bool(col.map(_is_scalar).all())


def _kind_of(ids: np.ndarray) -> str:
    if ids.dtype.kind in "iu":
        return "int"
    if len(ids) and isinstance(ids[0], str):
        return "str"
    return "other"
