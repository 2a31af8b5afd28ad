"""The README's blocks run as written, so that they never drift from the code.

What runs, in a temporary working directory holding a copy of ``configs/``:

* every line of the ```` ```sh ```` block through the CLI (``recforge`` -> ``main``), in
  order, except ``recforge bench`` (it only lists the benchmarks, and only in a checkout),
  with ``--size small`` run as ``--size tiny`` and ``../shared/data`` pointed at the real
  data directory; the lines that read MovieLens-100K need the real data (skipped if absent);
* the ```` ```yaml ```` job, parsed and checked as a train job (not trained: the shell
  block trains the same model from ``configs/ml100k_itemcf.yaml``);
* the three ```` ```python ```` blocks (models, rankers, serving), in one namespace, with ``SIZES["small"]`` run as
  ``SIZES["tiny"]`` and ``epochs=3`` as ``epochs=1`` (the full-size DeepFM snippet takes
  minutes on 2 cores, so its printed numbers are not checked); the first block needs the
  real data, and the recall@10 / ndcg@10 in its comment must match what it computes.

The ``make run`` / ``make test`` lines are checked to be Makefile targets, not run.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recforge.cli.main import main
from recforge.jobs import TrainJob
from tests.conftest import data_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SMALLER = (
    ('SIZES["small"]', 'SIZES["tiny"]'),
    ("epochs=3", "epochs=1"),
    ("--size small", "--size tiny"),
)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def smaller(text: str, real: Path | None) -> str:
    for a, b in SMALLER:
        text = text.replace(a, b)
    if real is not None:
        text = text.replace("../shared/data", str(real))
    return text


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    real = data_dir()
    if real is not None:
        monkeypatch.setenv("RECFORGE_DATA_DIR", str(real))
    return real


def test_readme_has_the_blocks_this_test_runs():
    assert len(blocks("sh")) == 1 and len(blocks("yaml")) == 1 and len(blocks("python")) == 3
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^\s+make (\w+)", README, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"make {target}"


def test_readme_yaml_job_is_valid(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(blocks("yaml")[0])
    parsed = TrainJob.from_yaml(job)
    assert parsed.model.name == "itemcf" and parsed.output
    yaml.safe_load(blocks("yaml")[0])


def test_readme_shell_block_runs(workdir):
    lines = [ln.split("  #")[0].strip() for ln in blocks("sh")[0].splitlines()]
    lines = [ln for ln in lines if ln.startswith("recforge ")]
    assert lines
    runner = CliRunner()
    for line in lines:
        args = shlex.split(smaller(line, workdir))[1:]
        if args[0] == "bench":
            continue
        if workdir is None and ("ml-100k" in line or "runs/" in line or "--config" in line):
            continue  # needs the real MovieLens data
        result = runner.invoke(main, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        if args[0] == "recommend":
            assert "user 196:" in result.output and "(cold: fallback)" in result.output
            assert "99999" in result.output
    if workdir is not None:
        for out in ("runs/ml100k_itemcf", "runs/als", "runs/als-hnsw"):
            assert Path(out).is_dir(), out
        assert Path("runs/ml100k_itemcf/metrics.json").exists()
        assert Path("runs/ml100k_itemcf/report.html").exists()


def test_readme_python_blocks_run(workdir, capsys):
    code = blocks("python")
    namespace: dict = {}
    if workdir is None:
        code = code[1:]  # the first block reads MovieLens-100K
    for block in code:
        exec(compile(smaller(block, workdir), "README.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "auc" in out
    assert (
        "'rank'" in out and "True" in out.splitlines()[-1]
    )  # the serving block's trace, cold user
    if workdir is not None:
        assert "recall@10" in out and Path("runs/itemcf/manifest.json").exists()
        # the example output the README shows as a comment is what the block printed
        for key in ("recall@10", "ndcg@10"):
            said = float(re.search(rf'"{key}": ([0-9.]+)', blocks("python")[0]).group(1))
            got = float(re.search(rf"'{key}': ([0-9.]+)", out).group(1))
            assert got == pytest.approx(said, abs=0.0015), key
