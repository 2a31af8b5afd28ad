"""``recforge serve`` and ``recforge bundle build|verify|info``: thin over recforge.serving."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "serving" / "demo_bundle.yaml"


@click.group("bundle")
def bundle() -> None:
    """Build, verify and inspect serving bundles (the whole funnel in one directory)."""


@bundle.command("build")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="Bundle job YAML (data, split, recall, ranker, rerank, evaluate, output).",
)
@click.option("--out", default=None, help="Bundle directory (overrides the config's output).")
def bundle_build(config_path: str, out: str | None) -> None:
    """Train (or reuse) recall channels and a ranker, and write one bundle."""
    from recforge.serving.build import BundleJob, build_bundle

    job = BundleJob.from_yaml(config_path)
    if out:
        job.output = out
    result = build_bundle(job, echo=click.echo)
    m = result["metrics"]
    k = m.get("k", 10)
    click.echo(f"bundle {result['version']} written to {result['output']} in {result['seconds']}s")
    for name in ("funnel", "recall_merged", f"channel/{m.get('best_channel')}"):
        if f"{name}/ndcg@{k}" in m:
            click.echo(
                f"  {name:<24} recall@{k}={m[f'{name}/recall@{k}']:.4f} "
                f"ndcg@{k}={m[f'{name}/ndcg@{k}']:.4f}"
            )
    from recforge.report_parts import write_bundle_report

    click.echo(f"report: {write_bundle_report(job, result)}")
    click.echo(f"serve it: recforge serve --bundle {result['output']}")


@bundle.command("verify")
@click.argument("path", type=click.Path(file_okay=False))
def bundle_verify(path: str) -> None:
    """Check every file of a bundle (checksums, nothing missing or added) and load it."""
    from recforge.serving.core import Recommender

    rec = Recommender.load(path)
    warm = rec.warmup()
    click.echo(
        f"ok: bundle {rec.bundle.version} ({len(rec.bundle.manifest['files'])} files), warm-up {warm}"
    )


@bundle.command("info")
@click.argument("path", type=click.Path(file_okay=False))
def bundle_info(path: str) -> None:
    """Print what a bundle holds (parts, fields and their sources, rules, metrics)."""
    from recforge.serving.core import Recommender

    click.echo(json.dumps(Recommender.load(path).info(), indent=2, default=str))


@click.command("serve")
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Bundle directory to serve (`recforge bundle build` writes one).",
)
@click.option(
    "--models",
    "models_root",
    type=click.Path(file_okay=False),
    default=None,
    help="Model repository ROOT/<name>/<version>/ (hot reload; `recforge models publish`).",
)
@click.option(
    "--demo", is_flag=True, help="Serve a demo bundle on synthetic data (built if missing)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option(
    "--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="REST port."
)
@click.option(
    "--grpc-port",
    default=8500,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="gRPC port (0: no gRPC server).",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="REST processes."
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Torch threads per process, set once at start-up.",
)
@click.option(
    "--max-body",
    default=256 * 1024,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request body in bytes (413 above).",
)
@click.option(
    "--policy",
    default="latest",
    show_default=True,
    help="Version policy with --models: latest, latest:N or specific:V1,V2.",
)
@click.option(
    "--poll-interval", default=2.0, show_default=True, type=float, help="Seconds between scans."
)
@click.option(
    "--memory-budget-mb",
    default=None,
    type=float,
    help="Loaded versions (size on disk) may not exceed this; a load beyond it is refused.",
)
@click.option(
    "--warmup-budget-ms",
    default=2000.0,
    show_default=True,
    type=float,
    help="A version whose warm-up is slower never takes traffic.",
)
@click.option(
    "--loader-nice",
    default=10,
    show_default=True,
    type=click.IntRange(0, 19),
    help="With --models: loads run in a thread this many nice steps below the requests.",
)
@click.option(
    "--runtime",
    "runtime_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Runtime parameters per model name (k limits, quotas, weights, filters, diversity); "
    "re-read when it changes (with --models).",
)
@click.option(
    "--precomputed",
    "precomputed_dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="With --bundle: a `recforge batch-recommend` output over the same bundle; plain "
    "requests are answered from its lists while they are fresh.",
)
@click.option(
    "--precomputed-max-age",
    default=86_400.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds after the batch job finished during which its lists answer.",
)
@click.option(
    "--feedback",
    "feedback_url",
    default=None,
    help="Feedback store: sqlite://PATH[?synchronous=NORMAL] or postgresql://...",
)
@click.option(
    "--rate-limit",
    default=0.0,
    show_default=True,
    type=float,
    help="Requests/s per client (API key, else address); 0: no limit.",
)
def serve(
    bundle_dir: str | None,
    models_root: str | None,
    demo: bool,
    host: str,
    port: int,
    grpc_port: int,
    workers: int,
    threads: int,
    max_body: int,
    policy: str,
    poll_interval: float,
    memory_budget_mb: float | None,
    warmup_budget_ms: float,
    loader_nice: int,
    runtime_file: str | None,
    precomputed_dir: str | None,
    precomputed_max_age: float,
    feedback_url: str | None,
    rate_limit: float,
) -> None:
    """Serve a bundle (or a model repository) over REST (docs at /docs) and gRPC until
    interrupted. API keys come from RECFORGE_READ_KEYS, RECFORGE_FEEDBACK_KEYS and
    RECFORGE_ADMIN_KEYS (comma-separated); feedback and admin calls need one."""
    from recforge.exceptions import ConfigError
    from recforge.serving.settings import ServerSettings

    if sum(map(bool, (bundle_dir, models_root, demo))) != 1:
        raise ConfigError("serve: give --bundle DIR, --models ROOT, or --demo for a demo bundle.")
    if demo:
        bundle_dir = demo_bundle(click.echo)
    if precomputed_dir and models_root:
        raise ConfigError(
            "serve: --precomputed serves with --bundle (one bundle, one batch job over it); "
            "with --models every version would need its own lists."
        )
    if workers > 1 and (models_root or feedback_url):
        raise ConfigError(
            "serve: --models and --feedback run in one process; drop --workers and run "
            "replicas behind a load balancer instead (docs/OPERATIONS.md, 'Several processes')."
        )
    settings = ServerSettings(
        host=host,
        port=port,
        grpc_port=grpc_port or None,
        max_body_bytes=max_body,
        threads=threads,
        workers=workers,
        models_root=models_root,
        version_policy=policy,
        poll_interval_s=poll_interval,
        memory_budget_mb=memory_budget_mb,
        warmup_budget_ms=warmup_budget_ms,
        runtime_file=runtime_file,
        precomputed_dir=precomputed_dir,
        precomputed_max_age_s=precomputed_max_age,
        loader_nice=loader_nice,
        feedback_url=feedback_url,
        rate_limit_rps=rate_limit,
    ).with_env_keys()
    if models_root:
        run_repository(settings, echo=click.echo)
    else:
        run_server(bundle_dir, settings, echo=click.echo)


def demo_bundle(echo=click.echo, out: str = "runs/demo-bundle") -> str:
    """The newest bundle under ``runs/`` (``make run`` leaves one in runs/<time>/bundle), or
    one built from ``serving/demo_bundle.yaml`` into ``out``."""
    from recforge.serving.build import BundleJob, build_bundle

    found = sorted(Path("runs").glob("*/bundle.json"), key=lambda p: p.stat().st_mtime)
    found += sorted(Path("runs").glob("*/bundle/bundle.json"), key=lambda p: p.stat().st_mtime)
    if found:
        newest = max(found, key=lambda p: p.stat().st_mtime).parent
        echo(f"serving the newest bundle under runs/: {newest}")
        return str(newest)
    echo(f"building the demo bundle into {out} (synthetic data, about a minute) ...")
    job = BundleJob.from_yaml(DEMO_CONFIG)
    job.output = out
    build_bundle(job, echo=echo)
    return out


def run_server(bundle_dir: str, settings, echo=click.echo) -> None:
    """Load, warm up and serve ``bundle_dir`` (REST in the foreground, gRPC beside it)."""
    from recforge.serving.core import Recommender
    from recforge.serving.runtime import apply_file
    from recforge.serving.settings import apply_threads
    from recforge.serving.source import SingleBundle

    rec = Recommender.load(bundle_dir)
    apply_threads(settings.threads)
    source = SingleBundle(rec)
    if settings.runtime_file:  # read once: reloads need --models
        apply_file(rec, settings.runtime_file, source.name)
    if settings.precomputed_dir:
        from recforge.serving.precomputed import Precomputed

        rec.use_precomputed(
            Precomputed.load(settings.precomputed_dir, settings.precomputed_max_age_s)
        )
    warm = rec.warmup()
    serve_source(
        source,
        settings,
        f"serving bundle {rec.bundle.version} from {bundle_dir} (warm-up {warm['known_ms']:.1f} ms)",
        curl_line(settings, rec),
        echo=echo,
        bundle_dir=bundle_dir,
    )


def run_repository(settings, echo=click.echo) -> None:
    """Serve every model under ``settings.models_root``: the version manager and its
    watcher (hot reload), feedback and keys; stops the watcher and the store at exit."""
    from recforge.serving.feedback import open_store
    from recforge.serving.repository import open_repository
    from recforge.serving.settings import apply_threads

    apply_threads(settings.threads)
    manager, watcher = open_repository(settings)
    store = open_store(settings.feedback_url) if settings.feedback_url else None
    names = ", ".join(
        f"{e['name']} v{e['default_version']}" if e["default_version"] else f"{e['name']} (none)"
        for e in manager.describe()
    )
    try:
        serve_source(
            manager,
            settings,
            f"serving the model repository {settings.models_root}: {names or 'no model yet'}",
            None,
            echo=echo,
            feedback=store,
        )
    finally:
        watcher.stop()
        if store is not None:
            store.close()


def serve_source(
    source, settings, banner: str, curl: str | None, echo=click.echo, bundle_dir=None, feedback=None
) -> None:
    """REST in the foreground (gRPC beside it) over ``source`` until interrupted."""
    import os

    import uvicorn

    from recforge.serving.app import create_app
    from recforge.serving.grpc_server import create_grpc_server

    app = create_app(source, settings, feedback)  # refuses an unsafe bind before listening
    grpc_server = None
    if settings.grpc_port:
        grpc_server = create_grpc_server(
            source,
            settings.grpc_port,
            settings.host,
            max_message_bytes=settings.max_body_bytes,
            access=app.state.access,  # the same keys as REST
            feedback=feedback,
            feedback_history=settings.feedback_history,
        )
        grpc_server.start()
    if not settings.loopback:
        echo(f"binding {settings.host}, not loopback: every request needs an API key.")
    echo(
        f"{banner}\n"
        f"  REST  http://{settings.host}:{settings.port}  (docs: /docs)\n"
        + (f"  gRPC  {settings.host}:{settings.grpc_port}\n" if grpc_server else "")
        + (f"  try:  {curl}" if curl else "")
    )
    sys.stdout.flush()
    try:
        if settings.workers > 1:
            os.environ["RECFORGE_BUNDLE"] = str(bundle_dir)
            os.environ["RECFORGE_MAX_BODY"] = str(settings.max_body_bytes)
            os.environ["RECFORGE_THREADS"] = str(settings.threads)
            os.environ["RECFORGE_HOST"] = settings.host  # workers check keys as the parent did
            os.environ["RECFORGE_RATE_LIMIT"] = str(settings.rate_limit_rps)
            os.environ["RECFORGE_RUNTIME"] = settings.runtime_file or ""
            os.environ["RECFORGE_PRECOMPUTED"] = settings.precomputed_dir or ""
            os.environ["RECFORGE_PRECOMPUTED_MAX_AGE"] = str(settings.precomputed_max_age_s)
            uvicorn.run(
                "recforge.serving.app:app_from_env",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=settings.workers,
                log_level="warning",
            )
        else:
            uvicorn.run(
                app,
                host=settings.host,
                port=settings.port,
                log_level="warning",
            )
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1.0)


@click.command("publish")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
def publish(src: str, dest: str) -> None:
    """Copy SRC (a bundle, a saved retrieval model or a recall pipeline directory) into the
    model repository as DEST=ROOT/NAME's next version.

    SRC is verified first (every file checksummed); the copy is written beside the versions
    and renamed into place with its READY marker, so a running server never sees half of it.
    """
    from recforge.serving.repository import publish as publish_version
    from recforge.serving.single import verify_servable

    final = publish_version(src, dest, verify=verify_servable)
    click.echo(f"published {src} as {final} (version {final.name})")


def curl_line(settings, rec) -> str:
    user = rec.pipeline.channels[0].model.user_vocab_.raw_ids[0]
    user = user.item() if hasattr(user, "item") else user
    body = json.dumps({"user": user, "k": 5})
    return (
        f"curl -s -X POST http://{settings.host}:{settings.port}/v1/recommend "
        f"-H 'content-type: application/json' -d '{body}'"
    )


def recommend_from_bundle(
    bundle_dir: str,
    users: tuple[str, ...],
    k: int,
    history: tuple[str, ...],
    as_json: bool,
    explain: bool,
) -> None:
    """``recforge recommend --bundle DIR``: the served funnel, from the command line."""
    from recforge.serving.core import Recommender

    rec = Recommender.load(bundle_dir)
    answers = [
        rec.recommend(u, k=k, history=list(history) or None, explain=explain).to_dict()
        for u in users
    ]
    if as_json:
        click.echo(json.dumps(answers, indent=2, default=str))
        return
    for a in answers:
        cold = "  (cold: fallback)" if a["cold"] else ""
        click.echo(f"user {a['user']}:{cold}")
        for rank, e in enumerate(a["items"], 1):
            click.echo(f"  {rank:>3}. {e['item']}  {e['score']:.4f}")
        if explain:
            click.echo(f"  trace: {json.dumps(a['trace']['stage_ms'])}")


@click.command("batch-recommend")
@click.option(
    "--model",
    "source",
    type=click.Path(file_okay=False, exists=True),
    required=True,
    help="A retrieval model, recall pipeline or bundle directory.",
)
@click.option(
    "--users",
    default="all",
    show_default=True,
    help="'all' (every user the source knows) or a file with one user id a line.",
)
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--out", required=True, type=click.Path(), help="Parquet dataset directory (e.g. recs.parquet)."
)
@click.option("--chunk-size", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--include-seen", is_flag=True, help="Allow items the user interacted with.")
def batch_recommend_cmd(
    source: str, users: str, k: int, out: str, chunk_size: int, processes: int, include_seen: bool
) -> None:
    """Top-k for many users into Parquet, in chunks, resumable (rerun to finish a killed run)."""
    from recforge.serving.batch import batch_recommend

    ids: str | list = "all"
    if users != "all":
        lines = Path(users).read_text().split()
        ids = [int(x) if x.lstrip("-").isdigit() else x for x in lines]
    r = batch_recommend(
        source, out, users=ids, k=k, chunk_size=chunk_size, processes=processes,
        exclude_seen=not include_seen, echo=lambda m: click.echo(m, err=True),
    )  # fmt: skip
    click.echo(
        f"{r['rows']:,} rows for {r['users']:,} users in {r['chunks']} chunks "
        f"({r['written']} written, {r['skipped']} already there) -> {r['out']} "
        f"in {r['seconds']}s ({r['users_per_s']} users/s)"
    )
