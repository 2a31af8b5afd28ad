"""``recforge index build|bench``: Faiss indexes over a saved embedding model's item vectors.

recforge index build --model runs/als --kind hnsw --ef-search 64 --out runs/als-hnsw
recforge index bench --model runs/als --kinds flat,hnsw,ivf_flat,ivf_pq
recforge index bench --synthetic 100000,64 --queries 1000

The index itself lives in ``recforge.index`` (``build_index``, ``AnnIndex``, ``ann_bench``);
these commands only load vectors, pass the knobs through and print what came back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import numpy as np

from recforge.exceptions import ConfigError

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")
# CLI option -> IndexConfig field, and the index kinds the knob applies to
KNOBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nlist": ("nlist", ("ivf_flat", "ivf_pq")),
    "nprobe": ("nprobe", ("ivf_flat", "ivf_pq")),
    "pq_m": ("m", ("ivf_pq",)),
    "nbits": ("nbits", ("ivf_pq",)),
    "hnsw_m": ("hnsw_m", ("hnsw",)),
    "ef_construction": ("ef_construction", ("hnsw",)),
    "ef_search": ("ef_search", ("hnsw",)),
}


def knob_options(f):
    """The index knobs shared by ``build`` and ``bench`` (unset = the library default)."""
    pos = click.IntRange(min=1)
    opts = [
        click.option("--nlist", type=pos, help="IVF: k-means cells (default ~4*sqrt(n))."),
        click.option("--nprobe", type=pos, help="IVF: cells searched per query (default 16)."),
        click.option("--pq-m", type=pos, help="IVF-PQ: sub-quantisers, must divide the dimension."),
        click.option("--nbits", type=pos, help="IVF-PQ: bits per code (default 8)."),
        click.option("--hnsw-m", type=pos, help="HNSW: links per node (default 32)."),
        click.option("--ef-construction", type=pos, help="HNSW: build candidate list (200)."),
        click.option("--ef-search", type=pos, help="HNSW: search candidate list (default 128)."),
        click.option(
            "--metric",
            type=click.Choice(["ip", "l2"]),
            default="ip",
            show_default=True,
            help="ip = the model's dot-product scores; l2 = Euclidean distance.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config_for(kind: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """IndexConfig fields for ``kind`` from the CLI knobs that were set and apply to it."""
    return {
        field: knobs[opt]
        for opt, (field, kinds) in KNOBS.items()
        if knobs.get(opt) is not None and kind in kinds
    }


def check_buildable(kind: str, n: int, d: int, config: dict[str, Any]) -> str | None:
    """Why Faiss would fail to build ``kind`` over ``n`` vectors of dimension ``d``, or None.

    Faiss reports these as a C++ assertion; the CLI says what to change instead.
    """
    if kind == "ivf_pq":
        nbits = config.get("nbits", 8)
        if n < 2**nbits:
            return (
                f"ivf_pq with nbits={nbits} trains 2^{nbits} = {2**nbits} centroids per "
                f"sub-quantiser and needs at least that many vectors; there are {n}. "
                f"Lower --nbits (e.g. --nbits {max(1, n.bit_length() - 1)}) or use hnsw / ivf_flat."
            )
        m = config.get("m")
        if m is not None and d % m:
            return f"ivf_pq: --pq-m {m} must divide the dimension {d}."
    if kind in ("ivf_flat", "ivf_pq") and config.get("nlist", 0) > n:
        return f"{kind}: --nlist {config['nlist']} exceeds the {n} vectors; lower it."
    return None


def _build_error(kind: str, n: int, d: int, e: RuntimeError) -> ConfigError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(f"Faiss could not build a {kind} index over {n:,} x {d} vectors: {first}")


def load_vectors(model_dir: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """(model, item vectors (n_items, d), user vectors (n_users, d)) of a saved model."""
    from recforge import models as registry

    model = registry.load(model_dir)
    if not (hasattr(model, "item_vectors") and hasattr(model, "user_vectors")):
        embedding = sorted(
            n
            for n in registry.available("retrieval")
            if hasattr(registry.get_class(n), "item_vectors")
        )
        raise ConfigError(
            f"{model_dir} holds a {model.name!r} model, which has no item vectors; an index "
            f"needs an embedding model: {', '.join(embedding)}."
        )
    return (
        model,
        np.asarray(model.item_vectors(), dtype=np.float32),
        np.asarray(model.user_vectors(), dtype=np.float32),
    )


def parse_synthetic(text: str) -> tuple[int, int]:
    """``"N,D"`` -> (N, D), both positive."""
    try:
        n, d = (int(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected N,D (vectors, dimension), e.g. 100000,64", param_hint="--synthetic"
        ) from None
    if n < 1 or d < 1:
        raise click.BadParameter(f"{text!r}: N and D must be >= 1", param_hint="--synthetic")
    return n, d


def synthetic_vectors(n: int, d: int, n_queries: int, seed: int = 0):
    """Clustered Gaussian vectors (n, d) and queries (n_queries, d): 64 centres, unit noise,
    closer to learned embeddings than isotropic noise (which makes every ANN look bad)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)).astype(np.float32) * 2.0
    x = centres[rng.integers(0, 64, n)] + rng.normal(size=(n, d)).astype(np.float32)
    q = centres[rng.integers(0, 64, n_queries)] + rng.normal(size=(n_queries, d)).astype(np.float32)
    return x, q


@click.group("index")
def index() -> None:
    """Build and benchmark Faiss ANN indexes over an embedding model's item vectors."""


@index.command("build")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="A saved embedding model (als, bpr, lightgcn, dssm, ...).",
)
@click.option(
    "--kind", type=click.Choice(KINDS), default="hnsw", show_default=True, help="Index type."
)
@knob_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory to write index.faiss and index.json to.",
)
@click.option(
    "--check-queries",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="User vectors used to report recall@10 against exact search (0: skip).",
)
def index_build(
    model_dir: str, kind: str, metric: str, out: str, check_queries: int, **knobs: Any
) -> None:
    """Build an index over the model's item vectors and save it (Faiss binary + JSON).

    Row r of the index is the model's internal item r; recall@10 against exact search on
    the model's own user vectors is printed so a knob setting can be judged at once.
    """
    from recforge.index import build_index, exact_search, recall_vs_exact

    model, items, users = load_vectors(model_dir)
    config = _config_for(kind, knobs)
    problem = check_buildable(kind, *items.shape, config)
    if problem:
        raise ConfigError(f"{model_dir}: {problem}")
    t0 = time.perf_counter()
    try:
        ann = build_index(items, kind=kind, metric=metric, **config)
    except RuntimeError as e:  # Faiss's own assertions
        raise _build_error(kind, *items.shape, e) from None
    build_s = time.perf_counter() - t0
    path = ann.save(out)
    params = {k: v for k, v in vars(ann.config).items() if k not in ("train_size", "seed")}
    click.echo(
        f"built {kind} over {ann.ntotal:,} x {ann.dim} item vectors of {model.name} in {build_s:.2f}s"
    )
    click.echo(f"config: {json.dumps(params)}")
    if check_queries and len(users):
        q = users[:check_queries]
        k = min(10, ann.ntotal)
        found, _ = ann.search(q, k)
        recall = recall_vs_exact(found, exact_search(items, q, k, metric))
        click.echo(f"recall@{k} vs exact on {len(q):,} user vectors: {recall:.4f}")
    click.echo(f"saved to {path}")


@index.command("bench")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A saved embedding model: its item vectors indexed, its user vectors as queries.",
)
@click.option(
    "--synthetic",
    default=None,
    metavar="N,D",
    help="Instead of --model: N clustered random vectors of dimension D.",
)
@click.option(
    "--kinds",
    default=",".join(KINDS),
    show_default=True,
    help="Comma-separated index kinds to compare.",
)
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True, help="Recall@k.")
@click.option(
    "--queries",
    "n_queries",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of queries.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of --synthetic.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@knob_options
def index_bench(
    model_dir: str | None,
    synthetic: str | None,
    kinds: str,
    k: int,
    n_queries: int,
    seed: int,
    as_json: bool,
    metric: str,
    **knobs: Any,
) -> None:
    """Compare index kinds: recall@k against exact search, batch queries/s, single-query
    p50/p99 latency and build time."""
    from recforge.index import ann_bench

    if (model_dir is None) == (synthetic is None):
        raise click.UsageError("pass exactly one of --model DIR and --synthetic N,D.")
    chosen = [x.strip() for x in kinds.split(",") if x.strip()]
    for kind in chosen:
        if kind not in KINDS:
            raise click.BadParameter(
                f"{kind!r} is not one of {', '.join(KINDS)}", param_hint="--kinds"
            )
    if synthetic is not None:
        n, d = parse_synthetic(synthetic)
        vectors, queries = synthetic_vectors(n, d, n_queries, seed=seed)
        source = f"synthetic {n:,} x {d}"
    else:
        model, vectors, users = load_vectors(model_dir)  # type: ignore[arg-type]
        rows = np.random.default_rng(seed).permutation(len(users))[:n_queries]
        queries = users[np.sort(rows)]
        source = f"{model.name} items {len(vectors):,} x {vectors.shape[1]}"
    k = min(k, len(vectors))
    configs = {kind: _config_for(kind, knobs) for kind in chosen}
    for kind in list(chosen):
        problem = check_buildable(kind, *vectors.shape, configs[kind])
        if problem:
            click.echo(f"skipping {kind}: {problem}", err=True)
            chosen.remove(kind)
    if not chosen:
        raise ConfigError("no index kind can be built over these vectors; see above.")
    try:
        table = ann_bench(vectors, queries, chosen, k=k, metric=metric, configs=configs)
    except RuntimeError as e:  # Faiss's own assertions
        raise _build_error(",".join(chosen), *vectors.shape, e) from None
    if as_json:
        click.echo(json.dumps(table.to_dict(orient="records"), indent=2, default=float))
        return
    click.echo(f"{source}, {len(queries):,} queries, metric {metric}")
    recall = f"recall@{k}"
    click.echo(
        f"{'index':<10} {recall:>10} {'qps':>10} {'p50_ms':>8} {'p99_ms':>8} {'build_s':>8}  params"
    )
    for r in table.to_dict(orient="records"):
        click.echo(
            f"{r['index']:<10} {r[recall]:>10.4f} {r['qps']:>10.0f} {r['p50_ms']:>8.3f} "
            f"{r['p99_ms']:>8.3f} {r['build_s']:>8.3f}  {r['params']}"
        )
