"""``recforge retrain --from-feedback STORE``: the closed loop (recforge.serving.retrain)."""

from __future__ import annotations

import sys

import click


@click.command("retrain")
@click.option(
    "--from-feedback",
    "feedback_url",
    required=True,
    help="The feedback store the server writes: sqlite://PATH or postgresql://...",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    required=True,
    help="The bundle job that built the serving version (configs/bundles/*.yaml).",
)
@click.option(
    "--models",
    "models_root",
    type=click.Path(file_okay=False),
    required=True,
    help="The model repository ROOT the server watches (recforge serve --models ROOT).",
)
@click.option("--name", default=None, help="Model name under ROOT (default: the job's name).")
@click.option(
    "--positive-types",
    default="click,like,cart,purchase",
    show_default=True,
    help="Event types that count as positive interactions (comma-separated).",
)
@click.option(
    "--rating-min",
    default=4.0,
    show_default=True,
    type=float,
    help="A rating event counts as positive when its value is at least this.",
)
@click.option(
    "--metric",
    type=click.Choice(["ndcg", "recall"]),
    default="ndcg",
    show_default=True,
    help="Judged on the served list at the job's evaluate.k.",
)
@click.option(
    "--tolerance",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Publish when candidate >= serving - tolerance.",
)
@click.option(
    "--min-holdout",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Held-out positive rows (newer than the serving version's data) needed to judge.",
)
@click.option("--against", type=int, default=None, help="Version to beat (default: newest).")
@click.option("--force", is_flag=True, help="Run even if nothing arrived since the last run.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the JSON report here.",
)
def retrain(
    feedback_url: str,
    config_path: str,
    models_root: str,
    name: str | None,
    positive_types: str,
    rating_min: float,
    metric: str,
    tolerance: float,
    min_holdout: int,
    against: int | None,
    force: bool,
    report: str | None,
) -> None:
    """Retrain the bundle job on its log plus the feedback, judge it against the serving
    version on the newest held-out slice, publish it only if it is not worse.

    Exit status: 0 published, 3 kept (worse), 4 nothing new, 5 another run holds the lock
    (2: an error, named on stderr). Safe to run from cron; the report is in
    ROOT/NAME/.retrain/last.json.
    """
    from pathlib import Path

    from recforge.serving.build import BundleJob
    from recforge.serving.retrain import FeedbackMapping, RetrainConfig
    from recforge.serving.retrain import retrain as run_retrain

    cfg = RetrainConfig(
        job=BundleJob.from_yaml(config_path),
        models_root=Path(models_root),
        feedback_url=feedback_url,
        name=name,
        mapping=FeedbackMapping(
            tuple(t.strip() for t in positive_types.split(",") if t.strip()), rating_min
        ),
        metric=metric,
        tolerance=tolerance,
        min_holdout=min_holdout,
        against=against,
        force=force,
        report=Path(report) if report else None,
    )
    result = run_retrain(cfg, echo=lambda m: click.echo(m, err=True))
    where = f" (report {result.report_path})" if result.report_path else ""
    click.echo(f"{result.decision}: {result.report.get('reason', '')}{where}")
    sys.exit(result.exit_code)
