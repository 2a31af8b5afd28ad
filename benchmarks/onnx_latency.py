"""ONNX export: scoring latency of 200 candidates, torch vs onnxruntime, on the same model.

Protocol: DeepFM, DCNv2 and ESMM (embedding 16, MLP (256, 128)) trained for one epoch on
the synthetic "small" CTR frame, 20k clicks (weights do not change the cost); 200 candidate rows of one
request, pre-encoded as the server holds them; each engine scores them ``REPEATS`` times
after ``WARMUP`` calls, one thread each (torch ``set_num_threads(1)``, onnxruntime
``intra_op_num_threads=1``). Reported: median and p99 per call in milliseconds and their
ratio, measured in the same process back to back (interleaved rounds), plus the largest
|onnx - torch| probability difference.

Run it::

    python -m benchmarks.onnx_latency --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report

log = logging.getLogger(__name__)

SECTION = "## Ranking speed"
SUBSECTION = "### ONNX export: 200-candidate scoring, torch vs onnxruntime"
COMMAND = "python -m benchmarks.onnx_latency --docs docs/BENCHMARKS.md"
N_CANDIDATES = 200
WARMUP = 20
REPEATS = 300
MODELS = {
    "deepfm": {"hidden": (256, 128)},
    "dcnv2": {"hidden": (256, 128)},
    "esmm": {"hidden": (256, 128)},
}


def _time(fn, repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3  # ms


def run(data_dir: str | Path | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Latency rows per model; ``{"rows": [...], "markdown": ...}``. Needs no data dir."""
    import torch

    from recforge import models
    from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic
    from recforge.export import OnnxRanker, export_onnx

    torch.set_num_threads(1)
    synth = make_synthetic(**{**SIZES["small"], "n_interactions": 20_000})
    frame = make_ctr_frame(synth, n_negatives=2, conversion_min_rating=4)
    frame = frame.drop(columns=[c for c in ("tags",) if c in frame])
    request = frame.sample(N_CANDIDATES, random_state=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, own in MODELS.items():
            label: Any = ["label", "conversion"] if name == "esmm" else "label"
            train = frame if name == "esmm" else frame.drop(columns="conversion")
            model = models.get(name, embedding_dim=16, epochs=1, batch_size=2048, num_threads=1,
                               progress=False, **own)  # fmt: skip
            model.fit(train, label=label)
            t0 = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{name}.onnx")
            export_s = time.perf_counter() - t0
            onnx_model = OnnxRanker(path, num_threads=1)
            x = model.encode(model.encoder_, request.drop(columns=["label", "conversion"]))
            diff = float(
                np.abs(onnx_model.predict_proba_encoded(x) - model.predict_proba_encoded(x)).max()
            )
            load0 = os.getloadavg()[0]
            t_torch, t_onnx = [], []
            for _ in range(WARMUP):
                model.predict_proba_encoded(x), onnx_model.predict_proba_encoded(x)
            for _ in range(REPEATS // 50):  # interleaved rounds: both see the same load
                t_torch.append(_time(lambda m=model, x=x: m.predict_proba_encoded(x), 50))
                t_onnx.append(_time(lambda m=onnx_model, x=x: m.predict_proba_encoded(x), 50))
            a, b = np.concatenate(t_torch), np.concatenate(t_onnx)
            rows.append({
                "model": name, "torch_p50": float(np.median(a)), "torch_p99": float(np.percentile(a, 99)),
                "onnx_p50": float(np.median(b)), "onnx_p99": float(np.percentile(b, 99)),
                "max_diff": diff, "export_s": export_s,
                "load": f"{load0:.1f}-{os.getloadavg()[0]:.1f}",
            })  # fmt: skip
            log.info("%s", rows[-1])
    result = {"rows": rows, "date": _dt.date.today().isoformat()}
    result["markdown"] = to_markdown(result)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "onnx_latency.md").write_text(result["markdown"])
    return result


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        SUBSECTION,
        "",
        f"{N_CANDIDATES} pre-encoded candidate rows per call, {REPEATS} calls per engine after "
        f"{WARMUP} warm-up calls, interleaved, one thread each; models trained one epoch on "
        "the synthetic small CTR frame with 20k clicks (embedding 16, MLP (256, 128)). ESMM returns two "
        "columns (pCTR, pCTCVR). See `benchmarks/onnx_latency.py`.",
        "",
        f"    {COMMAND}",
        "",
        "| model | torch p50 ms | torch p99 ms | onnxruntime p50 ms | onnxruntime p99 ms | torch / onnx (p50) | max abs diff | export s | load avg | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['torch_p50']:.3f} | {r['torch_p99']:.3f} | {r['onnx_p50']:.3f} | "
            f"{r['onnx_p99']:.3f} | {r['torch_p50'] / r['onnx_p50']:.2f} | {r['max_diff']:.1e} | "
            f"{r['export_s']:.1f} | {r['load']} | {result['date']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="unused (synthetic data)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--docs", default=None, help="markdown file to update")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(args.data_dir, args.out)
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
