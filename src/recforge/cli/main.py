"""The ``recforge`` command line: thin commands over library functions.

recforge quickstart                         the whole funnel on synthetic data
recforge datasets synth --size small --out data/synth
recforge datasets inspect ml-100k | PATH
recforge models [NAME]                      every registered model; NAME: its parameters
recforge train --config configs/itemcf.yaml
recforge evaluate --model runs/itemcf
recforge recommend --model runs/itemcf --user u12 -k 10
recforge index build --model runs/als --kind hnsw --out runs/als-hnsw
recforge index bench --model runs/als | --synthetic 100000,64
recforge bundle build --config configs/bundles/synth.yaml
recforge serve --bundle runs/bundle-synth       REST on :8501, gRPC on :8500
recforge recommend --bundle runs/bundle-synth --user u12 --explain
recforge batch-recommend --model runs/als --users all -k 100 --out recs.parquet
recforge retrain --from-feedback sqlite://fb.db --config JOB.yaml --models ROOT
recforge bench [NAME | all]                 the repository's benchmarks (in a checkout)

Every mistake recforge can name (a missing file, a bad config key or value, a malformed
log line, an unknown id, a corrupt model directory) prints one ``error: ...`` line on
stderr and exits with status 2; ``-vv`` also prints the traceback.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import click

from recforge.cli.export_cmd import export as export_command
from recforge.cli.index_cmd import index as index_group
from recforge.cli.report_cmd import report as report_group
from recforge.cli.retrain_cmd import retrain as retrain_command
from recforge.cli.serve_cmd import batch_recommend_cmd
from recforge.cli.serve_cmd import bundle as bundle_group
from recforge.cli.serve_cmd import publish as publish_command
from recforge.cli.serve_cmd import serve as serve_command
from recforge.exceptions import RecforgeError

# Errors that are the user's to fix: one line, exit status 2, no traceback (unless -vv).
USER_ERRORS: tuple[type[BaseException], ...] = (
    RecforgeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class _Group(click.Group):
    """Turns recforge's own errors into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            fail(ctx, e)


def fail(ctx: click.Context, e: BaseException, message: str | None = None) -> NoReturn:
    """Print ``error: <message>`` on stderr (the traceback too under ``-vv``) and exit 2."""
    if (ctx.find_root().params.get("verbose") or 0) >= 2:
        traceback.print_exception(e)
    text = message or str(e)
    if isinstance(e, OSError) and not isinstance(e, RecforgeError) and e.filename:
        text = message or f"{e.filename}: {e.strerror or e}"
    click.echo(f"error: {text}", err=True)
    sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    envvar="RECFORGE_THREADS",
    show_envvar=True,
    help="Threads for training and scoring (models whose num_threads is unset). "
    "Default: the cores not busy with other work.",
)
@click.version_option(package_name="recforge")
def main(verbose: int, threads: int | None) -> None:
    """recforge: interaction logs in, recommendations out.

    Start with `recforge quickstart`, which generates data, trains recall and ranking
    models, evaluates them, saves them and writes a report. Then `recforge models`,
    `recforge train --config configs/itemcf.yaml`, `recforge recommend --model DIR --user ID`.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if threads is not None:
        from recforge.threads import set_default_threads

        set_default_threads(threads)


# ---------------------------------------------------------------------------- quickstart
@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory (default runs/<timestamp>).",
)
@click.option(
    "--size",
    default="small",
    show_default=True,
    help="Synthetic data size: tiny, small, medium, large.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data.")
def quickstart(out: str | None, size: str, seed: int) -> None:
    """Generate synthetic data, train recall channels (MostPopular, ItemCF, ALS, EASE) and
    rankers (LR, DeepFM, DCNv2, LightGBM), evaluate them, save the models and write report.html / report.md."""
    from recforge import quickstart as qs

    _check_size(size)
    qs.run(out, size=size, seed=seed, echo=click.echo)


def _check_size(size: str) -> None:
    from recforge.data.synth import SIZES

    if size not in SIZES:
        raise click.BadParameter(f"{size!r} is not one of {', '.join(SIZES)}", param_hint="--size")


# ---------------------------------------------------------------------------- datasets
@main.group()
def datasets() -> None:
    """Generate and inspect datasets."""


@datasets.command("synth")
@click.option(
    "--size", default="small", show_default=True, help="Preset: tiny, small, medium, large, xlarge."
)
@click.option("--seed", default=0, show_default=True, help="Same seed, same data.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory to write Parquet files to.",
)
def datasets_synth(size: str, seed: int, out: str) -> None:
    """Write a synthetic log (interactions.parquet) with users.parquet and items.parquet.

    Users have latent tastes that drift across sessions, items follow a power law of
    popularity and carry category, brand, price, tags and a title.
    """
    from recforge.data.synth import SIZES, make_synthetic

    _check_size(size)
    inter = make_synthetic(**SIZES[size], seed=seed)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    inter.frame.to_parquet(path / "interactions.parquet", index=False)
    inter.user_features.to_parquet(path / "users.parquet")
    inter.item_features.to_parquet(path / "items.parquet")
    click.echo(
        f"wrote {len(inter):,} interactions, {inter.n_users:,} users, {inter.n_items:,} items to {path}"
    )


@datasets.command("inspect")
@click.argument("source")
@click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Folder of named datasets (default $RECFORGE_DATA_DIR).",
)
@click.option(
    "--user-col", default="user", show_default=True, help="Log files: the user id column."
)
@click.option(
    "--item-col", default="item", show_default=True, help="Log files: the item id column."
)
@click.option(
    "--skip-bad-rows", is_flag=True, help="Skip malformed rows (and count them) instead of failing."
)
def datasets_inspect(
    source: str, data_dir: str | None, user_col: str, item_col: str, skip_bad_rows: bool
) -> None:
    """Summarise a dataset: SOURCE is a named dataset (ml-100k, ml-latest-small,
    amazon-beauty, frappe), a directory written by `datasets synth`, or a log file
    (CSV/TSV/Parquet/JSONL)."""
    from recforge.data import Interactions
    from recforge.data.readers import DATASETS, load_dataset, read_interactions
    from recforge.exceptions import DataError

    p = Path(source)
    try:
        if source in DATASETS:
            inter = load_dataset(source, data_dir)
        elif p.is_dir() and (p / "interactions.parquet").exists():
            import pandas as pd

            uf = pd.read_parquet(p / "users.parquet") if (p / "users.parquet").exists() else None
            itf = pd.read_parquet(p / "items.parquet") if (p / "items.parquet").exists() else None
            inter = Interactions(pd.read_parquet(p / "interactions.parquet"), uf, itf, name=str(p))
        else:
            inter = read_interactions(
                p, user_col=user_col, item_col=item_col, skip_bad_rows=skip_bad_rows
            )
    except DataError as e:  # the library's hints name keyword arguments; say the options
        import re

        text = str(e).replace("skip_bad_rows=True", "--skip-bad-rows")
        text = re.sub(r"\b(user|item)_col=", r"--\1-col", text)
        raise DataError(text.replace("Pass data_dir=", "Pass --data-dir")) from None
    for line in describe(inter):
        click.echo(line)


def describe(inter) -> list[str]:
    """Human-readable summary lines of an Interactions."""
    f = inter.frame
    n_u, n_i = inter.n_users, inter.n_items
    per_user = f.groupby("user").size()
    lines = [
        f"name:         {inter.name}",
        f"rows:         {len(f):,}",
        f"users:        {n_u:,}  (interactions per user: median {per_user.median():.0f}, max {per_user.max():,})",
        f"items:        {n_i:,}",
        f"density:      {len(f) / max(1, n_u * n_i):.5f}",
        f"columns:      {', '.join(f.columns)}",
    ]
    if "timestamp" in f:
        lines.append(f"time:         {f['timestamp'].min()} .. {f['timestamp'].max()}")
    if "rating" in f:
        dist = f["rating"].value_counts().sort_index()
        lines.append("ratings:      " + ", ".join(f"{k}: {v:,}" for k, v in dist.items()))
    if "label" in f:
        lines.append(f"label rate:   {f['label'].mean():.4f}")
    top = f["item"].value_counts().head(5)
    lines.append("top items:    " + ", ".join(f"{k} ({v:,})" for k, v in top.items()))
    for name, table in (
        ("user features", inter.user_features),
        ("item features", inter.item_features),
    ):
        if table is not None:
            lines.append(f"{name}: {', '.join(map(str, table.columns))} ({len(table):,} rows)")
    if inter.meta.get("skipped_rows"):
        lines.append(
            f"skipped rows: {inter.meta['skipped_rows']:,} (lines {inter.meta.get('skipped_lines')})"
        )
    return lines


# ---------------------------------------------------------------------------- models
class _ModelsGroup(click.Group):
    """``recforge models [NAME]`` describes models; ``recforge models publish`` publishes a
    bundle. Any word that is not a subcommand is a model name."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        return click.Command(
            cmd_name, callback=lambda: list_models(cmd_name), add_help_option=False
        )


@main.group("models", cls=_ModelsGroup, invoke_without_command=True)
@click.pass_context
def models_group(ctx: click.Context) -> None:
    """Every registered model with its kind and when to use it; ``models NAME``: that
    model's parameters (type, default, description); ``models publish SRC ROOT/NAME``: copy a
    bundle into a model repository as its next version."""
    if ctx.invoked_subcommand is None:
        list_models(None)


def list_models(name: str | None) -> None:
    from recforge import models as registry
    from recforge.models.params import param_specs, when_to_use

    if name is None:
        for n, kind in registry.available().items():
            click.echo(f"{n:<14} {kind:<10} {when_to_use(registry.get_class(n))}")
        click.echo("\nParameters of one model: recforge models NAME")
        return
    cls = registry.get_class(name)  # unknown: ConfigError with the closest name
    click.echo(f"{name} ({cls.kind}): {when_to_use(cls)}")
    click.echo(
        f"  class {cls.__module__}.{cls.__name__}; in a job: model: {{name: {name}, params: {{...}}}}"
    )
    click.echo("parameters:")
    specs = param_specs(cls)
    width = max(len(s.name) for s in specs) if specs else 0
    for s in specs:
        default = "required" if s.default is inspect.Parameter.empty else repr(s.default)
        click.echo(f"  {s.name:<{width}}  {s.type_text} = {default}")
        if s.description:
            click.echo(f"  {'':<{width}}    {s.description}")


# ---------------------------------------------------------------------------- train / evaluate
@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="Job YAML (see configs/).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Override the config's output directory.",
)
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Data-parallel processes: launches torchrun (DistributedDataParallel, gloo on CPU).",
)
@click.pass_context
def train(
    ctx: click.Context, config_path: str, out: str | None, overwrite: bool, nproc: int
) -> None:
    """Train the model a YAML job file describes, evaluate it on the job's split, save it.

    \b
    The file has sections data, split, model, evaluate and output, e.g.
      data: {source: ml-100k, positive_threshold: 4}
      split: {method: random, test_ratio: 0.2, seed: 123}
      model: {name: itemcf, params: {k: 100}}
      evaluate: {k: [10, 20]}
      output: runs/itemcf

    The output directory gets the model, job.json, metrics.json and report.md/.html; an
    existing one is refused unless --overwrite.
    """
    from recforge.exceptions import ConfigError
    from recforge.jobs import TrainJob, run_train

    job = TrainJob.from_yaml(config_path)
    if out:
        job.output = out
    if nproc > 1:
        from recforge.train.distributed import launch

        args = ["train", "--config", config_path] + (["--out", out] if out else [])
        sys.exit(launch(nproc, [*args, *(["--overwrite"] if overwrite else [])]))
    from recforge.progress import show_progress

    if show_progress(None):  # someone watches: say what is happening before the bars
        click.echo(f"training {job.model.name} ({config_path}) ...", err=True)
    try:
        result = run_train(job, overwrite=overwrite)
    except ConfigError as e:  # the library's hint, as this command's options
        text = str(e).replace("Pass overwrite=True", "Pass --overwrite")
        raise ConfigError(
            text.replace("set another output", "set another output: (or --out)")
        ) from None
    except RecforgeError:
        raise
    except (TypeError, ValueError) as e:  # a parameter value the model's own checks missed
        fail(
            ctx,
            e,
            f"{config_path}: model {job.model.name!r} with params {job.model.params} failed: "
            f"{type(e).__name__}: {e}. Check the values under model.params "
            f"(`recforge models` lists each model's parameters; -vv shows the traceback).",
        )
    if result.get("rank"):  # a torchrun worker other than rank 0: rank 0 reports
        return
    if result.get("skipped_rows"):
        click.echo(f"skipped {result['skipped_rows']:,} malformed rows (data.skip_bad_rows)")
    _print_metrics(result["metrics"])
    click.echo(f"saved {result['model']} to {result['output']} (metrics.json, {result['report']})")


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="A model or recall-pipeline directory.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Job YAML giving data and split (default: the job.json saved with the model).",
)
def evaluate(model_dir: str, config_path: str | None) -> None:
    """Evaluate a saved model or recall pipeline on the test split of its job (or of
    --config). Warns when most test users or items are unknown to the model."""
    from recforge.exceptions import ConfigError, DataError
    from recforge.jobs import (
        TrainJob,
        evaluate_model,
        in_job_terms,
        load_data,
        load_saved,
        split_data,
        unknown_share_warnings,
        write_job_report,
    )

    model = load_saved(model_dir)
    if config_path:
        job = TrainJob.from_yaml(config_path)
    else:
        saved = Path(model_dir) / "job.json"
        if not saved.exists():
            raise ConfigError(
                f"{saved} not found (a train job writes it beside the model): pass --config "
                f"with the job file whose data and split to evaluate on."
            )
        job = TrainJob.from_dict(json.loads(saved.read_text()), where=str(saved))
    try:
        inter = load_data(job.data)
        train, _, test = split_data(inter, job.split)
    except (DataError, ConfigError) as e:
        raise (DataError if isinstance(e, DataError) else ConfigError)(in_job_terms(e)) from None
    for warning in unknown_share_warnings(model, test):
        click.echo(f"warning: {warning}", err=True)
    t0 = time.perf_counter()
    metrics = evaluate_model(model, job, test, known=inter)
    _print_metrics(metrics)
    _, report = write_job_report(
        Path(model_dir) / "evaluate",
        job,
        model,
        metrics,
        data=inter,
        train=train,
        test=test,
        seconds=time.perf_counter() - t0,
        title=f"recforge evaluate: {model_dir}",
    )
    click.echo(f"report: {report}")


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A retrieval model or recall-pipeline directory.",
)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A serving bundle: the whole funnel (recall, rank, re-rank), cold users included.",
)
@click.option(
    "--user", "users", multiple=True, required=True, help="Raw user id; repeat for several users."
)
@click.option(
    "--history",
    multiple=True,
    help="--bundle: a recent item id of the user (repeat; oldest first).",
)
@click.option("--explain", is_flag=True, help="--bundle: print each stage's time.")
@click.option(
    "-k", type=click.IntRange(min=1), default=10, show_default=True, help="How many items per user."
)
@click.option(
    "--include-seen", is_flag=True, help="Allow items the user interacted with in training."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def recommend(
    model_dir: str | None,
    bundle_dir: str | None,
    users: tuple[str, ...],
    history: tuple[str, ...],
    explain: bool,
    k: int,
    include_seen: bool,
    as_json: bool,
) -> None:
    """Top-k recommendations for users from a saved retrieval model, a recall pipeline or
    a serving bundle. Users the model never saw get the fallback (the most popular items,
    or the pipeline's / bundle's fallback) and are named on stderr."""
    from recforge.exceptions import ConfigError
    from recforge.jobs import is_pipeline, load_saved

    if (model_dir is None) == (bundle_dir is None):
        raise ConfigError("recommend: give --model DIR or --bundle DIR.")
    if bundle_dir is not None:
        from recforge.cli.serve_cmd import recommend_from_bundle

        recommend_from_bundle(bundle_dir, users, k, history, as_json, explain)
        return
    loaded = load_saved(model_dir)
    if is_pipeline(loaded):
        vocab = loaded.channels[0].model.user_vocab_
        ids = [_coerce_id(u, vocab.raw_ids) for u in users]
        result = loaded.recommend(ids, k=k)
        cold = [u for u in ids if not any(u in c.model.user_vocab_ for c in loaded.channels)]
        rows = result.items()
        scores = [
            result.frame.loc[result.frame["user_pos"] == i, "score"].to_numpy()
            for i in range(len(ids))
        ]
    else:
        if loaded.kind != "retrieval":
            raise ConfigError(
                f"{model_dir} holds a {loaded.kind} model ({loaded.name}); recommend needs a "
                f"retrieval model or a recall pipeline (a ranker scores given items)."
            )
        ids = [_coerce_id(u, loaded.user_vocab_.raw_ids) for u in users]
        cold = [u for u in ids if u not in loaded.user_vocab_]
        rows, scores = loaded.recommend(ids, k=k, exclude_seen=not include_seen, unknown="popular")
    if cold:
        how = "the pipeline's fallback" if is_pipeline(loaded) else "the most popular items"
        shown = ", ".join(map(str, cold[:10])) + (
            f" and {len(cold) - 10} more" if len(cold) > 10 else ""
        )
        click.echo(
            f"note: {len(cold)} user(s) unknown to the model (cold): {shown}; they got {how}.",
            err=True,
        )
    cold_set = set(cold)
    if as_json:
        out = {
            str(u): [
                {"item": _jsonable(i), "score": float(sc)}
                for i, sc in zip(row, srow)
                if sc > float("-inf")
            ]
            for u, row, srow in zip(ids, rows, scores)
        }
        click.echo(json.dumps(out, indent=2))
        return
    for u, row, srow in zip(ids, rows, scores):
        click.echo(f"user {u}:" + ("  (cold: fallback)" if u in cold_set else ""))
        for rank, (i, sc) in enumerate(zip(row, srow), 1):
            if sc > float("-inf"):
                click.echo(f"  {rank:>3}. {i}  {sc:.4f}")


def _coerce_id(text: str, vocab_ids):
    """A CLI string as the vocabulary's id type (ints stay ints)."""
    if len(vocab_ids) and isinstance(vocab_ids[0], int | __import__("numpy").integer):
        try:
            return int(text)
        except ValueError:
            return text
    return text


def _jsonable(x):
    return x.item() if hasattr(x, "item") else x


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        click.echo(f"{key:<20} {value:.4f}" if isinstance(value, float) else f"{key:<20} {value}")


# ---------------------------------------------------------------------------- index, serving
main.add_command(index_group)
main.add_command(bundle_group)
main.add_command(serve_command)
main.add_command(batch_recommend_cmd)
models_group.add_command(publish_command)
main.add_command(export_command)
main.add_command(report_group)
main.add_command(retrain_command)


# ---------------------------------------------------------------------------- bench
@main.command()
@click.argument("name", required=False)
@click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Folder of real datasets (default $RECFORGE_DATA_DIR or ../shared/data).",
)
def bench(name: str | None, data_dir: str | None) -> None:
    """List the repository's benchmarks, or run one (NAME) or all (`all`).

    Benchmarks are tools of the recforge repository (its benchmarks/ folder), not part of
    the installed library: run this inside a checkout (or `python -m benchmarks`).
    Results and commands: docs/BENCHMARKS.md.
    """
    bm = _benchmarks_package()
    if bm is None:
        raise click.ClickException(
            "no benchmarks/ folder here: benchmarks live in the recforge repository, not in "
            "the installed package. Run `recforge bench` from a checkout's root (or `make bench`)."
        )
    if name is None:
        click.echo(bm.listing())
        click.echo("Usage: recforge bench NAME | recforge bench all")
        return
    names = list(bm.BENCHES) if name == "all" else [name]
    if name != "all":
        bm.get_bench(name)  # an unknown name fails here, before any work
    for n in names:
        click.echo(f"== bench {n}")
        click.echo(bm.format_result(bm.run_bench(n, data_dir=data_dir)))


def _benchmarks_package() -> ModuleType | None:
    """The repository's ``benchmarks`` package, found in the working directory or beside
    the source tree of an editable install; None when neither has one."""
    import importlib
    import sys

    import recforge

    for root in (Path.cwd(), Path(recforge.__file__).resolve().parents[2]):
        pkg = root / "benchmarks"
        if not (pkg / "__init__.py").is_file():
            continue
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        module = importlib.import_module("benchmarks")
        if Path(module.__file__).resolve().parent == pkg.resolve():
            return module
    return None


if __name__ == "__main__":  # pragma: no cover
    main()
