"""``recforge report compare RUN RUN ...``: runs side by side, thin over recforge.report."""

from __future__ import annotations

import click


@click.group("report")
def report() -> None:
    """Run reports (every train, evaluate, bundle build and quickstart run writes one)."""


@report.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", default="runs/compare", show_default=True, help="Output directory.")
def compare_cmd(runs: tuple[str, ...], out: str) -> None:
    """Put two or more runs' reports side by side, their curves overlaid."""
    from recforge.exceptions import ConfigError
    from recforge.report import compare

    if len(runs) < 2:
        raise ConfigError("report compare: give at least two run directories.")
    try:
        _, html_path = compare(list(runs), out)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    click.echo(f"comparison of {len(runs)} runs: {html_path}")
