"""``recforge export --onnx MODEL_DIR OUT``: a saved torch ranker as an ONNX graph."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option(
    "--onnx",
    "onnx_args",
    nargs=2,
    type=click.Path(),
    required=True,
    metavar="MODEL_DIR OUT",
    help="Export the saved torch ranker in MODEL_DIR to the ONNX file OUT.",
)
@click.option(
    "--exporter",
    type=click.Choice(["auto", "torchscript", "dynamo"]),
    default="auto",
    show_default=True,
    help="torch's ONNX exporter (auto: TorchScript, else torch.export).",
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def export(onnx_args: tuple[str, str], exporter: str, force: bool) -> None:
    """Export a torch ranker to ONNX (dynamic batch; the encoder's integer codes, numbers
    and padded lists as inputs; the served probability as output), then check that
    onnxruntime scores random valid rows within 1e-5 of torch. Serve or score it with
    `recforge.export.OnnxRanker`; encode rows with the model's own encoder."""
    from recforge import models
    from recforge.exceptions import ConfigError
    from recforge.export import TOLERANCE, export_onnx

    model_dir, out = onnx_args
    out_path = Path(out)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} exists; pass --force to overwrite it.")
    model = models.load(model_dir)
    t0 = time.perf_counter()
    path = export_onnx(model, out_path, exporter=exporter)
    click.echo(
        f"exported {model.name} from {model_dir} to {path} in {time.perf_counter() - t0:.1f}s "
        f"(onnxruntime within {TOLERANCE:g} of torch on 64 + 203 random rows)"
    )
