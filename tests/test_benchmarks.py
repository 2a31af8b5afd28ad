"""The repository's benchmarks/ folder behind `recforge bench` and `python -m benchmarks`:
no name lists them (never starts an hour of work), results print as text, and outside a
checkout the command says where benchmarks live."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import benchmarks
from recforge.cli import main as cli

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(cli.main, list(args), prog_name="recforge")


def test_no_name_lists_every_benchmark_without_running_any(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a benchmark ran")

    monkeypatch.setattr(benchmarks, "run_bench", boom)
    monkeypatch.chdir(REPO)
    result = run("bench")
    assert result.exit_code == 0, result.output
    for name in benchmarks.BENCHES:
        assert name in result.output
    assert "recforge bench NAME | recforge bench all" in result.output
    desc = benchmarks.describe()
    assert desc["cf_ml100k"] and all(desc.values())  # first docstring line of each module


def test_unknown_name_fails_before_any_work(monkeypatch):
    monkeypatch.chdir(REPO)
    result = run("bench", "cf_ml100")
    assert result.exit_code == 2 and "did you mean 'cf_ml100k'" in result.output


def test_results_print_as_text_not_json(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(benchmarks.BENCHES, "cf_ml100k", "tests.test_benchmarks:_fake_run")
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(REPO))
    result = run("bench", "cf_ml100k")
    assert result.exit_code == 0, result.output
    assert "| itemcf | 0.3 |" in result.output and "{" not in result.output


def _fake_run(data_dir, out=None):
    return {"rows": [{"model": "itemcf", "ndcg@10": 0.3}], "markdown": "| itemcf | 0.3 |"}


def test_format_result_without_markdown():
    text = benchmarks.format_result(
        {"deepfm": {"samples_per_s": 1234.5678, "auc": 0.71}, "rows": [{"a": 1, "b": "x"}]}
    )
    assert text.splitlines() == [
        "deepfm:",
        "  samples_per_s: 1235",
        "  auc: 0.71",
        "rows:",
        "  - a=1, b=x",
    ]


def test_outside_a_checkout_it_says_where_benchmarks_live(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_benchmarks_package", lambda: None)
    result = run("bench")
    assert result.exit_code != 0 and "benchmarks live in the recforge repository" in result.output


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_python_m_benchmarks_lists(args, capsys):
    from benchmarks.__main__ import main

    if args:
        with pytest.raises(SystemExit):
            main(args)
    else:
        assert main([]) == 0
    assert "cf_ml100k" in capsys.readouterr().out
