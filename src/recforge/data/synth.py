"""Synthetic interaction logs with known structure, for tests, demos and benchmarks.

    >>> from recforge.data.synth import make_synthetic, SIZES
    >>> inter = make_synthetic(**SIZES["small"])        # or make_synthetic(n_users=500, seed=3)

The world behind the log:

* every item has a latent vector near its category's centre, a power-law base popularity
  (``popularity_alpha``: the item of popularity rank r has weight r^-alpha), a category, a
  brand (brands belong to one category), a price (log-normal around a per-category level),
  1-4 tags (the tags whose direction is closest to the item's latent vector) and a title made
  of its brand, words of its category's topic and its first tag, so that text models have
  signal;
* every user has a gender, an age and a city; the (gender, age band) segment decides which
  categories a user tends to like, and the city decides how price-sensitive they are; the
  user's latent taste is a mix of their favourite categories' centres plus noise;
* a user's interactions come in sessions (``session_length`` clicks on average, ``click_gap``
  seconds apart, sessions ``session_gap`` seconds apart), each on one device and in one
  time of day (``daypart``: the session's start hour, 0-5 night, 6-11 morning, 12-17
  afternoon, 18-23 evening, UTC); the taste drifts between sessions as a random walk
  (``drift``);
* an interaction picks item i with probability
  ``∝ pop_i^a · exp(taste·v_i / τ + device_bias[device, category_i]
  + daypart_bias[daypart, category_i] - beta_user · log price_i)``,
  sampled by sampling-importance-resampling: ``n_candidates`` candidates per interaction
  from a popularity / category mixture proposal, one kept with Gumbel-max on the importance
  weights (exact as the candidate count grows, vectorised, ~1M interactions in seconds).

The result is an ``Interactions`` with columns ``user`` (raw ids "u0".."u{n_users-1}", str),
``item`` (raw ids 1..n_items, int64, so raw id != internal index), ``timestamp`` (int64
seconds since the epoch), ``rating`` (int8 1-5, correlated with the user's affinity),
``label`` (int8, always 1: the implicit click; the schema's canonical click column) and
``device`` (context: "mobile" / "desktop" / "tablet") and ``daypart`` (context: "night" /
"morning" / "afternoon" / "evening", the hour of the session's first click); the frame is
sorted by time. The device follows the user (their main device in 80% of sessions), the
time of day does not: what a session wants depends on its context as well as on the user,
which a ranker that sees the request's context can learn and collaborative filtering over
the whole history cannot.
Each (user, item) pair occurs once unless ``allow_repeats``. ``user_features`` (age, gender,
city) and ``item_features`` (category, brand, price, tags, title) are indexed by raw id;
``meta["latent"]`` holds the ground truth (final user tastes, item vectors, base popularity)
for oracle baselines, and ``meta["config"]`` the generating config.

``make_ctr_frame`` turns such a log (or any ``Interactions``) into a ranking training frame.
Same config and seed give identical output.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recforge.config import from_dict
from recforge.data.interactions import CANONICAL, Interactions
from recforge.data.sampling import NegativeSampler
from recforge.data.vocab import IdVocab
from recforge.exceptions import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("mobile", "desktop", "tablet")
DAYPARTS = ("night", "morning", "afternoon", "evening")  # session start hour // 6 (UTC)
_CHUNK = 16_384  # interactions drawn per vectorised step; bounds memory to ~n_candidates*dim*64 KiB
_REDRAW_ROUNDS = 8  # rounds of redrawing repeated (user, item) pairs before dropping them


@dataclass
class SynthConfig:
    """Knobs of the generator; build with ``from_dict`` so a misspelt key is an error."""

    n_users: int = 1000  # users, raw ids "u0".."u{n_users-1}"
    n_items: int = 500  # items, raw ids 1..n_items
    n_interactions: int = 20_000  # rows; fewer only if heavy users run out of unseen items
    n_categories: int = 20  # item categories, each a direction in latent space
    dim: int = 16  # latent dimension of tastes and item vectors
    popularity_alpha: float = 1.1  # Zipf exponent of base item popularity (rank^-alpha)
    popularity_weight: float = 1.0  # exponent a on popularity in the choice probability
    temperature: float = 0.3  # tau: lower = choices follow taste more sharply
    item_noise: float = 0.6  # spread of item vectors around their category centre
    taste_noise: float = 0.5  # spread of user tastes around their favourite categories
    session_length: float = 6.0  # mean clicks per session (geometric)
    click_gap: float = 60.0  # mean seconds between clicks within a session (exponential)
    session_gap: float = 129_600.0  # mean seconds between sessions (exponential, 1.5 days)
    join_window: float = 7_776_000.0  # users' first click is uniform in this many seconds (90 days)
    start_time: int = 1_672_531_200  # epoch seconds of the earliest possible click (2023-01-01)
    drift: float = 0.1  # norm of the per-session random-walk step of a user's taste
    activity_sigma: float = 1.0  # log-normal spread of user activity (heavy and light users)
    min_user_interactions: int = 5  # every user gets at least this many rows
    n_brands: int = 100  # brands, each belonging to one category (>= n_categories)
    n_tags: int = 40  # tag vocabulary; an item's tags follow its latent vector
    n_cities: int = 20  # cities; a city sets its users' price sensitivity
    device_effect: float = 0.5  # std of the per-(device, category) preference bias
    daypart_effect: float = 1.0  # std of the per-(time of day, category) preference bias
    n_candidates: int = (
        16  # importance-resampling candidates per interaction (more = closer to exact)
    )
    allow_repeats: bool = False  # keep repeated (user, item) pairs (re-consumption)
    seed: int = 0  # everything is a function of the config, this included

    def __post_init__(self) -> None:
        positive = ["n_users", "n_items", "n_interactions", "n_categories", "dim", "n_brands"]
        positive += ["n_tags", "n_cities", "n_candidates", "temperature", "session_length"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"SynthConfig.{name} must be > 0, got {getattr(self, name)!r}.")
        if self.n_brands < self.n_categories:
            raise ConfigError(
                f"SynthConfig.n_brands ({self.n_brands}) must be >= n_categories "
                f"({self.n_categories}): every category needs a brand."
            )
        if self.n_interactions < self.n_users * self.min_user_interactions:
            raise ConfigError(
                f"SynthConfig: n_interactions={self.n_interactions} is below n_users * "
                f"min_user_interactions = {self.n_users * self.min_user_interactions}; raise "
                f"n_interactions or lower min_user_interactions."
            )
        if not self.allow_repeats and self.min_user_interactions > self.n_items // 2:
            raise ConfigError(
                f"SynthConfig: min_user_interactions={self.min_user_interactions} exceeds half "
                f"of n_items={self.n_items}; users could not find enough distinct items."
            )


# Named sizes for `recforge datasets synth --size NAME`: make_synthetic(**SIZES[name]).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(n_users=200, n_items=150, n_interactions=6_000, n_categories=8, dim=8,
                 n_brands=24, n_tags=20, n_cities=8),
    "small": dict(n_users=2_000, n_items=1_000, n_interactions=80_000, n_categories=20, dim=16),
    "medium": dict(n_users=20_000, n_items=8_000, n_interactions=400_000, n_categories=40,
                   dim=16, n_brands=400, n_tags=80),
    "large": dict(n_users=100_000, n_items=30_000, n_interactions=1_000_000, n_categories=60,
                  dim=32, n_brands=1_500, n_tags=150, n_cities=50),
    "xlarge": dict(n_users=500_000, n_items=100_000, n_interactions=5_000_000, n_categories=100,
                   dim=32, n_brands=5_000, n_tags=300, n_cities=100),
}  # fmt: skip


def make_synthetic(config: SynthConfig | None = None, /, **params: Any) -> Interactions:
    """Generate a synthetic interaction log.

    Pass a ``SynthConfig`` or its fields as keywords (``make_synthetic(**SIZES["small"],
    seed=3)``); an unknown keyword raises ``ConfigError`` naming the closest valid one.
    Returns an ``Interactions`` as described in the module docstring.
    """
    if config is None:
        cfg = from_dict(SynthConfig, params, "make_synthetic")
    elif params:
        cfg = from_dict(SynthConfig, {**dataclasses.asdict(config), **params}, "make_synthetic")
    else:
        cfg = config
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    frame, final_taste = _make_log(cfg, world, rng)
    meta = {
        "generator": "recforge.data.synth",
        "config": dataclasses.asdict(cfg),
        "latent": {  # ground truth, row k = user "u{k}" / item k + 1
            "user_taste": final_taste,  # (n_users, dim) taste after each user's last session
            "item_vectors": world.item_vec,  # (n_items, dim)
            "item_popularity": world.pop,  # (n_items,) base popularity rank^-alpha
        },
    }
    return Interactions(
        frame, world.user_features, world.item_features, name="synthetic", meta=meta
    )


# ---------------------------------------------------------------------------- the world
class _World:
    """Latent vectors and side tables of users and items (no interactions yet)."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        c, d, ni, nu = cfg.n_categories, cfg.dim, cfg.n_items, cfg.n_users
        centres = rng.normal(size=(c, d))
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)  # (C, d) unit

        # items: category, latent vector, popularity, price, brand, tags, title
        cat_share = rng.dirichlet(np.full(c, 3.0))
        self.item_cat = rng.choice(c, size=ni, p=cat_share)
        self.item_vec = self.centres[self.item_cat] + rng.normal(
            0, cfg.item_noise / math.sqrt(d), (ni, d)
        )
        self.pop = (rng.permutation(ni) + 1.0) ** -cfg.popularity_alpha  # (n_items,)
        cat_price = rng.uniform(math.log(5), math.log(300), c)
        self.log_price = cat_price[self.item_cat] + rng.normal(0, 0.4, ni)
        self.log_price_rel = self.log_price - np.median(self.log_price)

        words = _fake_words(rng, c * 12 + cfg.n_tags + cfg.n_brands + 30)
        topic_words = np.array(words[: c * 12]).reshape(c, 12)
        tag_words = np.array(words[c * 12 : c * 12 + cfg.n_tags])
        brand_words = np.array(words[c * 12 + cfg.n_tags : c * 12 + cfg.n_tags + cfg.n_brands])
        generic = np.array(words[c * 12 + cfg.n_tags + cfg.n_brands :])

        brand_cat = rng.permutation(np.arange(cfg.n_brands) % c)  # every category has a brand
        by_cat = np.argsort(brand_cat, kind="stable")
        n_per_cat = np.bincount(brand_cat, minlength=c)
        first = np.concatenate([[0], np.cumsum(n_per_cat)[:-1]])
        pick = first[self.item_cat] + (rng.random(ni) * n_per_cat[self.item_cat]).astype(np.int64)
        item_brand = by_cat[pick]

        tag_dir = rng.normal(size=(cfg.n_tags, d))
        tag_dir /= np.linalg.norm(tag_dir, axis=1, keepdims=True)
        tag_score = self.item_vec @ tag_dir.T + rng.gumbel(0, 0.3, (ni, cfg.n_tags))
        n_show = min(4, cfg.n_tags)
        top_tags = np.argpartition(-tag_score, n_show - 1, axis=1)[:, :n_show]  # (n_items, <=4)
        order = np.argsort(-np.take_along_axis(tag_score, top_tags, axis=1), axis=1)
        top_tags = np.take_along_axis(top_tags, order, axis=1)  # best first
        n_tags_item = rng.integers(1, n_show + 1, ni)
        t1 = rng.integers(0, 12, ni)
        t2 = (t1 + rng.integers(1, 12, ni)) % 12
        g = rng.integers(0, len(generic), ni)
        titles = [
            f"{b} {w1} {w2} {tg} {gw}"
            for b, w1, w2, tg, gw in zip(
                brand_words[item_brand],
                topic_words[self.item_cat, t1],
                topic_words[self.item_cat, t2],
                tag_words[top_tags[:, 0]],
                generic[g],
            )
        ]
        self.item_features = pd.DataFrame(
            {
                "category": [f"cat{k:02d}" for k in self.item_cat],
                "brand": [f"brand{k:03d}" for k in item_brand],
                "price": np.round(np.exp(self.log_price), 2),
                "tags": [list(tag_words[row[:k]]) for row, k in zip(top_tags, n_tags_item)],
                "title": titles,
            },
            index=pd.Index(np.arange(1, ni + 1, dtype=np.int64), name="item"),
        )

        # users: gender and age band pick favourite categories, city sets price sensitivity
        gender = rng.integers(0, 2, nu)
        age = np.clip(np.rint(rng.normal(36, 12, nu)), 16, 80).astype(np.int64)
        band = np.digitize(age, [25, 35, 50])  # 0..3
        segment_pref = rng.dirichlet(np.full(c, 0.3), size=8)  # (8 segments, C)
        # three category draws per user from the segment's preference (inverse CDF against
        # the 8 segment CDFs laid end to end, one searchsorted)
        seg = (gender * 4 + band)[:, None]  # (n_users, 1)
        seg_cdf = (np.cumsum(segment_pref, axis=1) + np.arange(8)[:, None]).ravel()  # (8 * C,)
        favs = np.searchsorted(seg_cdf, rng.random((nu, 3)) + seg, side="right") - seg * c
        favs = np.minimum(favs, c - 1)  # (n_users, 3)
        n_fav = 1 + np.minimum(rng.poisson(0.8, nu), 2)
        w = rng.dirichlet(np.ones(3), nu) * (np.arange(3)[None, :] < n_fav[:, None])
        w /= w.sum(1, keepdims=True)
        self.taste0 = np.einsum("uk,ukd->ud", w, self.centres[favs])  # (n_users, d)
        self.taste0 += rng.normal(0, cfg.taste_noise / math.sqrt(d), (nu, d))
        city_p = rng.dirichlet(np.full(cfg.n_cities, 1.0))
        city = rng.choice(cfg.n_cities, size=nu, p=city_p)
        city_beta = rng.uniform(0.0, 0.8, cfg.n_cities)
        self.beta = np.clip(city_beta[city] + rng.normal(0, 0.1, nu), 0, None)  # (n_users,)
        self.main_device = rng.choice(len(DEVICES), size=nu, p=[0.6, 0.3, 0.1])
        self.device_bias = rng.normal(0, cfg.device_effect, (len(DEVICES), c))
        # its own stream, so that daypart_effect=0 gives the log of the generator before it
        side = np.random.default_rng([cfg.seed, 1])
        self.daypart_bias = side.normal(0, cfg.daypart_effect, (len(DAYPARTS), c))
        # the context of a session: device * len(DAYPARTS) + daypart -> bias per category
        self.context_bias = (self.device_bias[:, None, :] + self.daypart_bias[None, :, :]).reshape(
            len(DEVICES) * len(DAYPARTS), c
        )  # (n_contexts, C)
        self.user_features = pd.DataFrame(
            {
                "age": age,
                "gender": np.array(["f", "m"])[gender],
                "city": [f"city{k:02d}" for k in city],
            },
            index=pd.Index([f"u{k}" for k in range(nu)], name="user"),
        )

        # proposal pieces for sampling: alias tables over all items and within each category
        self.pa = self.pop**cfg.popularity_weight
        self.z_pop = self.pa.sum()
        self.alias_pop = _alias_table(self.pa)
        self.by_cat = np.argsort(self.item_cat, kind="stable")  # items grouped by category
        self.cat_count = np.bincount(self.item_cat, minlength=c)
        self.cat_lo = np.concatenate([[0], np.cumsum(self.cat_count)[:-1]])
        prob, alias = np.ones(ni), np.arange(ni)
        for k in np.flatnonzero(self.cat_count):
            lo, hi = self.cat_lo[k], self.cat_lo[k] + self.cat_count[k]
            prob[lo:hi], alias_k = _alias_table(self.pa[self.by_cat[lo:hi]])
            alias[lo:hi] = alias_k + lo
        self.alias_cat = (prob, alias)  # positions in by_cat
        self.z_cat = np.bincount(
            self.item_cat, weights=self.pa, minlength=c
        )  # (C,) mass per category
        self.item_vec32 = self.item_vec.astype(np.float32)
        with np.errstate(divide="ignore"):
            self.log_z_cat = np.log(self.z_cat)  # -inf for an empty category


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table of ``weights`` (n,): (accept probability (n,), alias (n,)).

    Draw: j uniform in 0..n-1; keep j with probability prob[j], else take alias[j]. O(1).
    """
    n = len(weights)
    scaled = weights * (n / weights.sum())
    prob, alias = np.ones(n), np.arange(n)
    small = [int(j) for j in np.flatnonzero(scaled < 1.0)]
    large = [int(j) for j in np.flatnonzero(scaled >= 1.0)]
    scaled = scaled.tolist()
    while small and large:
        s, g = small.pop(), large[-1]
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small.append(large.pop())
    return prob, alias


def _alias_draw(
    table: tuple[np.ndarray, np.ndarray], j: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Finish alias draws for uniform slots ``j`` (any shape)."""
    prob, alias = table
    return np.where(rng.random(j.shape) < prob[j], j, alias[j])


def _fake_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pronounceable made-up words."""
    syll = np.array([a + b for a in "bdfgklmnprstvz" for b in "aeiou"])
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        k = rng.integers(2, 4)
        w = "".join(rng.choice(syll, k))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


# ---------------------------------------------------------------------------- the log
def _user_counts(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Rows per user: a floor plus a log-normal share of the rest, capped to the catalogue."""
    act = rng.lognormal(0, cfg.activity_sigma, cfg.n_users)
    base = cfg.min_user_interactions
    counts = base + rng.multinomial(cfg.n_interactions - base * cfg.n_users, act / act.sum())
    cap = cfg.n_interactions if cfg.allow_repeats else max(base, cfg.n_items // 2)
    for _ in range(10):  # hand the excess of capped users to the others
        excess = int(np.maximum(counts - cap, 0).sum())
        counts = np.minimum(counts, cap)
        room = act * (counts < cap)
        if excess == 0 or room.sum() == 0:
            break
        counts = counts + rng.multinomial(excess, room / room.sum())
    return np.minimum(counts, cap)


def _segment_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 0 restarting at each True of ``starts`` (first row True)."""
    cs = np.cumsum(x, axis=0)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(x)), 0))
    return cs - cs[first] + x[first]


def _make_log(
    cfg: SynthConfig, world: _World, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    counts = _user_counts(cfg, rng)
    n = int(counts.sum())
    user = np.repeat(np.arange(cfg.n_users), counts)  # (N,) rows grouped by user, in time order
    pos = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    first = pos == 0
    new_session = first | (rng.random(n) < 1.0 / cfg.session_length)
    session = np.cumsum(new_session) - 1  # (N,) session index
    s_user = user[new_session]  # (S,)
    s_first = first[new_session]
    n_sessions = len(s_user)

    # taste drifts per session: a random walk restarted at each user's first session
    step = rng.normal(0, cfg.drift / math.sqrt(cfg.dim), (n_sessions, cfg.dim))
    step[s_first] = 0.0
    s_taste = world.taste0[s_user] + _segment_cumsum(step, s_first)  # (S, d)
    s_device = np.where(
        rng.random(n_sessions) < 0.8,
        world.main_device[s_user],
        rng.integers(0, len(DEVICES), n_sessions),
    )
    last_session = np.concatenate([np.flatnonzero(s_first)[1:] - 1, [n_sessions - 1]])
    final_taste = s_taste[last_session]  # (n_users, d); every user has >= 1 session

    # timestamps: join offset, then short gaps within and long gaps between sessions
    gap = np.where(
        new_session, rng.exponential(cfg.session_gap, n), rng.exponential(cfg.click_gap, n)
    )
    gap = np.where(first, rng.uniform(0, cfg.join_window, n), gap)
    ts = cfg.start_time + _segment_cumsum(np.floor(gap).astype(np.int64) + 1, first)
    s_daypart = (ts[new_session] // 3600 % 24) // 6  # (S,) the session's start hour // 6
    s_context = s_device * len(DAYPARTS) + s_daypart  # (S,) row of world.context_bias

    # choices, then redraw repeated (user, item) pairs a few rounds and drop what is left
    item, util = _draw(cfg, world, s_taste, s_context, session, user, np.arange(n), rng)
    keep = np.ones(n, dtype=bool)
    if not cfg.allow_repeats:
        for _ in range(_REDRAW_ROUNDS):
            keys = user * cfg.n_items + item
            dup = np.flatnonzero(pd.Series(keys).duplicated().to_numpy())
            if len(dup) == 0:
                break
            taken = np.sort(keys)
            item[dup], util[dup] = _draw(
                cfg, world, s_taste, s_context, session, user, dup, rng, taken
            )
        keep = ~pd.Series(user * cfg.n_items + item).duplicated().to_numpy()
        if not keep.all():
            log.info("synthetic: dropped %d repeated (user, item) rows", int((~keep).sum()))

    z = (util - util.mean()) / (util.std() + 1e-12)
    rating = np.clip(np.rint(3.5 + 1.0 * z + rng.normal(0, 0.8, n)), 1, 5).astype(np.int8)
    order = np.lexsort((user[keep], ts[keep]))  # by time, ties by user
    frame = pd.DataFrame(
        {
            "user": np.array([f"u{k}" for k in range(cfg.n_users)], dtype=object)[
                user[keep][order]
            ],
            "item": (item[keep][order] + 1).astype(np.int64),
            "timestamp": ts[keep][order].astype(np.int64),
            "rating": rating[keep][order],
            "label": np.ones(int(keep.sum()), dtype=np.int8),
            "device": np.array(DEVICES, dtype=object)[s_device[session[keep][order]]],
            "daypart": np.array(DAYPARTS, dtype=object)[s_daypart[session[keep][order]]],
        }
    )
    return frame, final_taste


def _draw(
    cfg: SynthConfig,
    world: _World,
    s_taste: np.ndarray,
    s_context: np.ndarray,
    session: np.ndarray,
    user: np.ndarray,
    rows: np.ndarray,
    rng: np.random.Generator,
    taken: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one item for each of ``rows``; returns (items (R,) int64, utility (R,) float).

    Sampling-importance-resampling: candidates come from a mixture of the popularity
    proposal, "category by taste, then item by popularity within it" and (when redrawing)
    uniform; one candidate is kept with probability ∝ target / proposal (Gumbel-max on log
    weights). ``taken``: sorted ``user * n_items + item`` keys the row's user must not get
    (a row whose candidates are all taken returns a taken item; the caller checks).
    """
    items = np.empty(len(rows), dtype=np.int64)
    utils = np.empty(len(rows), dtype=np.float64)
    k = cfg.n_candidates
    share = (0.5, 0.5, 0.0) if taken is None else (0.375, 0.375, 0.25)  # pop, category, uniform
    n_uni = round(k * share[2])
    n_pop = (k - n_uni) // 2
    n_cat = k - n_uni - n_pop
    tau, n_items = cfg.temperature, cfg.n_items
    c = cfg.n_categories
    for start in range(0, len(rows), _CHUNK):
        r = rows[start : start + _CHUNK]
        nr = len(r)
        # per-category quantities once per session (rows of a session share taste and context)
        sess, inv = np.unique(session[r], return_inverse=True)  # (Sc,), (R,) row -> session slot
        taste_s = s_taste[sess].astype(np.float32)  # (Sc, d)
        ctx_bias = world.context_bias[s_context[sess]]  # (Sc, C)
        cat_logit = taste_s @ world.centres.T / tau + ctx_bias + world.log_z_cat
        cat_logit -= cat_logit.max(1, keepdims=True)  # (Sc, C)
        p_cat = np.exp(cat_logit)
        p_cat /= p_cat.sum(1, keepdims=True)  # (Sc, C) proposal over categories

        cand_pop = _alias_draw(world.alias_pop, rng.integers(0, n_items, (nr, n_pop)), rng)
        # categories by inverse CDF: uniforms + session slot against slot-offset CDFs, one
        # searchsorted (queries sorted within a row, rows mostly in session order: fast)
        u = np.sort(rng.random((nr, n_cat)), axis=1) + inv[:, None]  # (R, n_cat)
        cdf = (np.cumsum(p_cat, 1) + np.arange(len(sess))[:, None]).ravel()
        cats = np.searchsorted(cdf, u.ravel(), side="right").reshape(nr, n_cat) - inv[:, None] * c
        cats = np.minimum(cats, c - 1)
        at = world.cat_lo[cats] + (rng.random(cats.shape) * world.cat_count[cats]).astype(np.int64)
        cand_cat = world.by_cat[_alias_draw(world.alias_cat, at, rng)]
        cand_uni = rng.integers(0, n_items, (nr, n_uni))
        cand = np.concatenate([cand_pop, cand_cat, cand_uni], axis=1)  # (R, K)

        ccat = np.take(world.item_cat, cand)  # (R, K)
        slot_cat = inv[:, None] * c + ccat  # (R, K) index into a flattened (Sc, C) array
        vec = np.take(world.item_vec32, cand, axis=0)  # (R, K, d)
        affinity = np.einsum("rd,rkd->rk", taste_s[inv], vec) / tau  # (R, K)
        price = world.beta[user[r], None] * np.take(world.log_price_rel, cand)  # (R, K)
        bias = np.take(ctx_bias, slot_cat)  # (R, K)
        # log weight = log target - log proposal, target = pa * exp(util), with
        # util = affinity + context_bias[device and daypart, category] - beta * log rel. price
        if n_uni == 0:  # q = pa * (s0 / Z + s1 * p_cat / Z_cat): pa cancels
            with np.errstate(
                divide="ignore", invalid="ignore"
            ):  # empty categories: 0/0, never drawn
                log_q = np.log(share[0] / world.z_pop + share[1] * p_cat / world.z_cat)  # (Sc, C)
            logw = affinity + bias - price - np.take(log_q, slot_cat)
        else:
            pa = np.take(world.pa, cand)
            q = share[0] * pa / world.z_pop + share[2] / n_items
            q += share[1] * np.take(p_cat, slot_cat) * pa / np.take(world.z_cat, ccat)
            logw = affinity + bias - price + np.log(pa / q)
        race = np.maximum(rng.standard_exponential(cand.shape, dtype=np.float32), 1e-30)
        logw -= np.log(race)  # argmax(w / Exp(1)) draws with probability ∝ w (Gumbel-max)
        if taken is not None:
            keys = user[r, None] * n_items + cand
            hit = np.searchsorted(taken, keys).clip(max=len(taken) - 1)
            logw[taken[hit] == keys] = -np.inf
        pick = np.argmax(logw, axis=1)
        rr = np.arange(nr)
        chosen = cand[rr, pick]
        items[start : start + nr] = chosen
        utils[start : start + nr] = affinity[rr, pick] + bias[rr, pick] - price[rr, pick]
    return items, utils


# ---------------------------------------------------------------------------- CTR frame
def make_ctr_frame(
    interactions: Interactions,
    *,
    n_negatives: int = 4,
    alpha: float = 0.75,
    seed: int = 0,
    with_timestamp: bool = False,
    text_columns: tuple[str, ...] = ("title",),
    known: Interactions | None = None,
    conversion_min_rating: int | None = None,
) -> pd.DataFrame:
    """A ranking / CTR training frame: logged positives plus sampled unclicked impressions.

    Each log row becomes an impression group of ``1 + n_negatives`` rows sharing the user,
    the context columns (``device`` ...) and the time: the clicked item (``label`` 1) and
    ``n_negatives`` distinct items the user never interacted with, drawn by exposure, i.e. item
    popularity in the log raised to ``alpha`` (``label`` 0). The positive sits at a random
    place in its group; groups are in log order (time order for ``make_synthetic`` logs),
    so a positional cut is a temporal split.

    Columns: ``user``, ``item``, the user feature columns, the item feature columns except
    ``text_columns`` (free text would be encoded as a category), the context columns,
    ``timestamp`` if ``with_timestamp`` (it is int and would otherwise be read as a
    category), and ``label`` (int8). Returns a DataFrame with ``len(log) * (1 + n_negatives)``
    rows.

    known: everything the users are known to have interacted with, e.g. the whole log when
    ``interactions`` is one split of it. Negatives are never among a user's known items (a
    test negative must not be something the user clicked in train). Exposure weights still
    come from ``interactions`` (no future popularity leaks into a train frame); items it
    never shows are drawn only for a user with nothing else left. Default: the split
    itself, which is only right when it is the whole log.

    conversion_min_rating: the conversion stage after the click, for multi-task rankers
    (ESMM, PLE, MMoE): adds a ``conversion`` column (int8), 1 on a clicked row whose log
    rating is >= this value and 0 elsewhere (an unclicked impression never converts). On
    ``make_synthetic`` logs the rating follows the user's utility for the item (taste, device,
    price sensitivity) plus noise; on MovieLens it is the user's rating.
    """
    if n_negatives < 1:
        raise ConfigError(f"make_ctr_frame: n_negatives must be >= 1, got {n_negatives}.")
    frame = interactions.frame
    if known is None:
        user_vocab, item_vocab = interactions.vocabs()
        exclude = None
    else:
        user_vocab, item_vocab = (
            IdVocab(
                pd.Index(getattr(interactions, a))
                .append(pd.Index(getattr(known, a)))
                .unique()
                .to_numpy(),
                kind=kind,
            )
            for a, kind in (("users", "user"), ("items", "item"))
        )
        exclude = known.to_csr(user_vocab, item_vocab)
    seen = interactions.to_csr(user_vocab, item_vocab)
    sampler = NegativeSampler(strategy="popularity", alpha=alpha, seed=seed)
    sampler.fit(seen, exclude=exclude)
    u_idx = user_vocab.index(frame["user"].to_numpy())
    pos_idx = item_vocab.index(frame["item"].to_numpy())
    neg_idx = sampler.sample(u_idx, n_negatives, distinct=True)  # (N, n_negatives)

    g = 1 + n_negatives
    n = len(frame)
    grid = np.concatenate([pos_idx[:, None], neg_idx], axis=1)  # (N, g), positive first
    label = np.zeros((n, g), dtype=np.int8)
    label[:, 0] = 1
    shuffle = np.argsort(np.random.default_rng(seed + 1).random((n, g)), axis=1)
    grid = np.take_along_axis(grid, shuffle, axis=1)
    label = np.take_along_axis(label, shuffle, axis=1)

    row = np.repeat(np.arange(n), g)  # log row of each output row
    out = pd.DataFrame(
        {"user": frame["user"].to_numpy()[row], "item": item_vocab.ids(grid.ravel())}
    )
    if interactions.user_features is not None:
        uf = interactions.user_features.reindex(out["user"].to_numpy())
        for col in uf.columns:
            out[col] = uf[col].to_numpy()
    if interactions.item_features is not None:
        itf = interactions.item_features.drop(
            columns=[c for c in text_columns if c in interactions.item_features]
        )
        itf = itf.reindex(out["item"].to_numpy())
        for col in itf.columns:
            out[col] = itf[col].to_numpy()
    for col in [c for c in frame.columns if c not in CANONICAL]:
        out[col] = frame[col].to_numpy()[row]
    if with_timestamp and interactions.has("timestamp"):
        out["timestamp"] = frame["timestamp"].to_numpy()[row]
    out["label"] = label.ravel()
    if conversion_min_rating is not None:
        if not interactions.has("rating"):
            raise ConfigError(
                "make_ctr_frame: conversion_min_rating needs a rating column in the log; "
                "leave it None for logs without ratings."
            )
        good = frame["rating"].to_numpy()[row] >= conversion_min_rating
        out["conversion"] = (out["label"].to_numpy() & good).astype(np.int8)
    return out
