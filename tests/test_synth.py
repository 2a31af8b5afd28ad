"""The synthetic generator: schema, determinism, realism knobs, and signal models can learn."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from recforge import models
from recforge.config import from_dict
from recforge.data.splits import leave_one_out
from recforge.data.synth import (
    DAYPARTS,
    DEVICES,
    SIZES,
    SynthConfig,
    make_ctr_frame,
    make_synthetic,
)
from recforge.exceptions import ConfigError


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(**SIZES["tiny"])


@pytest.fixture(scope="module")
def small():
    start = time.perf_counter()
    inter = make_synthetic(**SIZES["small"])
    inter.meta["seconds"] = time.perf_counter() - start
    return inter


def test_schema_and_ids(tiny):
    cfg = SynthConfig(**SIZES["tiny"])
    f = tiny.frame
    assert list(f.columns) == ["user", "item", "timestamp", "rating", "label", "device", "daypart"]
    assert len(f) == cfg.n_interactions and tiny.n_users == cfg.n_users
    assert f["user"].str.fullmatch(r"u\d+").all()
    assert f["item"].dtype == np.int64 and f["item"].between(1, cfg.n_items).all()
    assert f["timestamp"].dtype == np.int64 and f["timestamp"].is_monotonic_increasing
    assert f["rating"].between(1, 5).all() and (f["label"] == 1).all()
    assert set(f["device"]) <= set(DEVICES)
    assert not f.duplicated(["user", "item"]).any()
    assert tiny.context_columns == ["device", "daypart"]
    hour = pd.to_datetime(f["timestamp"], unit="s").dt.hour
    assert (f.loc[hour < 6, "daypart"] == "night").mean() > 0.9  # sessions last minutes
    assert (f.groupby("user").size() >= cfg.min_user_interactions).all()

    uf, itf = tiny.user_features, tiny.item_features
    assert list(uf.columns) == ["age", "gender", "city"] and set(f["user"]) <= set(uf.index)
    assert list(itf.columns) == ["category", "brand", "price", "tags", "title"]
    assert set(f["item"]) <= set(itf.index) and (itf["price"] > 0).all()
    assert itf["tags"].map(lambda t: 1 <= len(t) <= 4).all()
    # every brand belongs to one category
    assert (itf.groupby("brand")["category"].nunique() == 1).all()
    lat = tiny.meta["latent"]
    assert lat["user_taste"].shape == (cfg.n_users, cfg.dim)
    assert lat["item_vectors"].shape == (cfg.n_items, cfg.dim)


def test_same_seed_same_output_other_seed_differs(tiny):
    again = make_synthetic(**SIZES["tiny"])
    pd.testing.assert_frame_equal(again.frame, tiny.frame)
    pd.testing.assert_frame_equal(again.item_features, tiny.item_features)
    pd.testing.assert_frame_equal(again.user_features, tiny.user_features)
    other = make_synthetic(**{**SIZES["tiny"], "seed": 1})
    assert not other.frame["item"].equals(tiny.frame["item"])
    ctr1 = make_ctr_frame(tiny, n_negatives=2, seed=4)
    ctr2 = make_ctr_frame(again, n_negatives=2, seed=4)
    pd.testing.assert_frame_equal(ctr1, ctr2)


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="did you mean 'n_users'"):
        make_synthetic(n_user=10)
    with pytest.raises(ConfigError, match="n_items"):
        make_synthetic(n_items=0)
    with pytest.raises(ConfigError, match="min_user_interactions"):
        make_synthetic(n_users=100, n_interactions=100)
    for name, params in SIZES.items():  # every preset is a valid config
        cfg = from_dict(SynthConfig, params, f"SIZES[{name!r}]")
        assert cfg.n_interactions >= cfg.n_users * cfg.min_user_interactions
    small = SynthConfig(**SIZES["small"])
    assert (
        50_000 <= small.n_interactions <= 100_000
        and small.n_users == 2000
        and small.n_items == 1000
    )
    assert SynthConfig(**SIZES["large"]).n_interactions >= 1_000_000
    cfg = SynthConfig(**SIZES["tiny"])
    assert make_synthetic(cfg).frame.equals(make_synthetic(**dataclasses.asdict(cfg)).frame)


def test_popularity_is_heavy_tailed(small):
    counts = np.sort(small.frame["item"].value_counts().to_numpy())[::-1]
    top10 = counts[: len(counts) // 10].sum() / counts.sum()
    assert top10 > 0.35, f"top 10% of items hold only {top10:.0%} of interactions"
    # log-log slope of the rank-frequency curve over the head is clearly negative
    ranks = np.arange(1, 201)
    slope = np.polyfit(np.log(ranks), np.log(counts[:200]), 1)[0]
    assert slope < -0.5


def test_sessions_short_gaps_within_long_between(small):
    f = small.frame.sort_values(["user", "timestamp"])
    gaps = f.groupby("user")["timestamp"].diff().dropna().to_numpy()
    cfg = small.meta["config"]
    assert np.median(gaps) < 10 * cfg["click_gap"]  # most steps are within a session
    assert (gaps > 3600).mean() > 0.5 / cfg["session_length"]  # and a share are session breaks
    assert 0.5 * cfg["session_gap"] < gaps[gaps > 3600].mean() < 2 * cfg["session_gap"]


def test_drift_moves_interests_over_time():
    def early_late_overlap(drift):
        # without the time-of-day effect, which varies categories per session on its own
        inter = make_synthetic(
            **{**SIZES["tiny"], "drift": drift, "n_interactions": 8000, "daypart_effect": 0.0}
        )
        cat = inter.item_features["category"]
        f = inter.frame.assign(cat=cat.reindex(inter.frame["item"]).to_numpy())
        f = f.sort_values(["user", "timestamp"])
        pos = f.groupby("user").cumcount() / f.groupby("user")["item"].transform("size")
        early = f[pos < 0.3].groupby("user")["cat"].agg(set)
        late = f[pos >= 0.7].groupby("user")["cat"].agg(set)
        return np.mean([len(early[u] & late[u]) / len(early[u] | late[u]) for u in early.index])

    assert early_late_overlap(0.0) > early_late_overlap(1.0) + 0.05


def test_ratings_follow_affinity(small):
    lat = small.meta["latent"]
    u = small.frame["user"].str[1:].astype(int).to_numpy()
    i = small.frame["item"].to_numpy() - 1
    affinity = np.einsum("nd,nd->n", lat["user_taste"][u], lat["item_vectors"][i])
    assert stats.spearmanr(affinity, small.frame["rating"]).statistic > 0.2
    assert small.frame["rating"].nunique() == 5


def test_titles_carry_category_signal(tiny):
    itf = tiny.item_features
    x = TfidfVectorizer().fit_transform(itf["title"])
    sim = (x @ x.T).toarray()
    same = itf["category"].to_numpy()[:, None] == itf["category"].to_numpy()[None, :]
    np.fill_diagonal(same, False)
    off = ~same
    np.fill_diagonal(off, False)
    assert sim[same].mean() > 3 * sim[off].mean()


def test_popularity_and_taste_beat_random(small):
    """Leave-one-out hit rate @20: MostPopular >> random, the latent oracle > MostPopular."""
    train, test = leave_one_out(small, valid=False)
    users, truth = test.frame["user"].to_numpy(), test.frame["item"].to_numpy()
    model = models.get("most_popular").fit(train)
    ids, _ = model.recommend(users, k=20)
    hr_pop = np.mean([t in row for t, row in zip(truth, ids)])

    lat, cfg = small.meta["latent"], small.meta["config"]
    u = np.array([int(x[1:]) for x in users])
    scores = lat["user_taste"][u] @ lat["item_vectors"].T / cfg["temperature"]
    scores += cfg["popularity_weight"] * np.log(lat["item_popularity"])  # (n_test, n_items)
    seen = train.frame.assign(u=train.frame["user"].str[1:].astype(int))
    row_of = pd.Series(np.arange(len(u)), index=u)
    keep = seen["u"].isin(row_of.index)
    scores[row_of[seen["u"][keep]].to_numpy(), seen["item"][keep].to_numpy() - 1] = -np.inf
    top = np.argpartition(-scores, 20, axis=1)[:, :20] + 1
    hr_oracle = np.mean([t in row for t, row in zip(truth, top)])

    n_unseen = small.n_items - train.frame.groupby("user").size()[users].to_numpy()
    hr_random = np.mean(20 / n_unseen)
    assert hr_pop > 5 * hr_random, (hr_pop, hr_random)
    print(f"hit@20 random {hr_random:.3f} most_popular {hr_pop:.3f} oracle {hr_oracle:.3f}")
    assert hr_oracle > hr_pop + 0.03, (hr_oracle, hr_pop)


def test_ctr_frame_has_learnable_signal(tiny):
    ctr = make_ctr_frame(tiny, n_negatives=3, seed=0)
    assert len(ctr) == 4 * len(tiny) and ctr["label"].mean() == pytest.approx(0.25)
    expected = [
        "user",
        "item",
        "age",
        "gender",
        "city",
        "category",
        "brand",
        "price",
        "tags",
        "device",
        "daypart",
        "label",
    ]
    assert list(ctr.columns) == expected
    # negatives are never among the user's logged items
    logged = set(zip(tiny.frame["user"], tiny.frame["item"]))
    neg = ctr[ctr["label"] == 0]
    assert not any(pair in logged for pair in zip(neg["user"], neg["item"]))
    # each impression group: same user and device, exactly one positive
    groups = np.arange(len(ctr)) // 4
    assert (ctr.groupby(groups)["label"].sum() == 1).all()
    assert (ctr.groupby(groups)["user"].nunique() == 1).all()
    assert (ctr.groupby(groups)["item"].nunique() == 4).all()

    # a linear model on user x category / segment x category crosses learns it (time-ordered cut)
    x = pd.DataFrame(
        {
            "user_cat": ctr["user"] + "|" + ctr["category"],
            "seg_cat": ctr["gender"] + (ctr["age"] // 15).astype(str) + "|" + ctr["category"],
            "dev_cat": ctr["device"] + "|" + ctr["category"],
            "item": ctr["item"].astype(str),
        }
    )
    cut = int(0.8 * len(ctr)) // 4 * 4
    enc = OneHotEncoder(handle_unknown="ignore").fit(x.iloc[:cut])
    clf = LogisticRegression(C=0.5, max_iter=300).fit(
        enc.transform(x.iloc[:cut]), ctr["label"].iloc[:cut]
    )
    auc = roc_auc_score(
        ctr["label"].iloc[cut:], clf.predict_proba(enc.transform(x.iloc[cut:]))[:, 1]
    )
    print(f"ctr auc {auc:.3f}")
    assert auc > 0.65, auc


def test_small_is_fast(small):
    # ~1 s of CPU on an idle core; generous for a loaded shared machine
    assert small.meta["seconds"] < 30


def test_importance_resampling_converges_to_the_stated_choice_probability():
    """Draws for one session approach p(i) ∝ pop_i^a · exp(taste·v_i/τ + bias - beta·log price)."""
    from recforge.data.synth import _draw, _World

    def total_variation(k: int) -> float:
        cfg = SynthConfig(n_users=4, n_items=200, n_interactions=40, n_categories=8, dim=8,
                          n_brands=8, min_user_interactions=1, n_candidates=k)  # fmt: skip
        rng = np.random.default_rng(0)
        world = _World(cfg, rng)
        n = 60_000
        zeros = np.zeros(n, dtype=np.int64)
        context = np.array([1 * len(DAYPARTS) + 2])  # desktop, afternoon
        items, _ = _draw(cfg, world, world.taste0[:1], context, zeros, zeros, np.arange(n), rng)
        emp = np.bincount(items, minlength=cfg.n_items) / n
        logit = np.log(world.pa) + world.item_vec @ world.taste0[0] / cfg.temperature
        logit += world.device_bias[1, world.item_cat] + world.daypart_bias[2, world.item_cat]
        logit -= world.beta[0] * world.log_price_rel
        p = np.exp(logit - logit.max())
        return 0.5 * np.abs(emp - p / p.sum()).sum()

    tv8, tv64 = total_variation(8), total_variation(64)
    assert tv64 < 0.05 and tv64 < tv8, (tv8, tv64)


def test_time_of_day_shifts_what_a_session_wants():
    """The daypart bias moves category shares between times of day; without it (the
    generator before it: its own random stream leaves the other draws as they were) they
    do not move."""

    def shift(inter) -> float:
        cat = inter.item_features["category"].reindex(inter.frame["item"]).to_numpy()
        table = pd.crosstab(inter.frame["daypart"].to_numpy(), cat)
        return stats.chi2_contingency(table.to_numpy())[1]  # p-value of independence

    params = dict(SIZES["tiny"], n_interactions=12_000, seed=4)
    with_effect = make_synthetic(**params, daypart_effect=1.0)
    without = make_synthetic(**params, daypart_effect=0.0)
    assert shift(with_effect) < 1e-6 and shift(without) > 1e-3
    assert set(with_effect.frame["daypart"]) == set(DAYPARTS)
