"""The command line, end to end through click's CliRunner (in process), plus one run of the
installed ``recforge`` entry point. User mistakes must exit 2 with one ``error:`` line that
names the file / line / key / id, and never print a Python traceback."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from recforge import models
from recforge.cli.main import main
from recforge.index import AnnIndex

MICRO_SYNTH = {"n_users": 80, "n_items": 60, "n_interactions": 900, "n_categories": 4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="recforge")


def assert_user_error(result, *needles: str) -> str:
    """Exit 2, one ``error:`` line on stderr holding every needle, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def write_job(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def als_dir(tmp_path_factory) -> Path:
    """A tiny ALS model trained through `recforge train` (an embedding model, for index)."""
    tmp = tmp_path_factory.mktemp("als")
    config = write_job(
        tmp / "als.yaml",
        data={"source": "synth", "size": "tiny", "synth": MICRO_SYNTH},
        split={"method": "user_temporal", "test_ratio": 0.2},
        model={"name": "als", "params": {"factors": 8, "iterations": 3, "num_threads": 1}},
        evaluate={"k": [5, 10]},
        output=str(tmp / "model"),
    )
    result = run("train", "--config", config)
    assert result.exit_code == 0, result.output
    return tmp / "model"


@pytest.fixture
def bad_csv(tmp_path) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text("user,item,rating\nu1,1,5\nu2,2,4\nu3,3\nu1,2,3\nu2,1,5\n")
    return path


# ---------------------------------------------------------------------------- help
def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


COMMANDS = [((), main), *_commands(main)]


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "recforge" for p, _ in COMMANDS])
def test_help_of_every_command(path, cmd):
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: recforge" in result.output
    assert (cmd.help or "").split("\n")[0][:30].strip() in " ".join(result.output.split())
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert max(param.opts, key=len) in result.output, (path, param.opts)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands:
            assert sub in result.output


def test_entry_point_installed():
    exe = Path(sys.executable).parent / "recforge"
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("train", "recommend", "datasets", "index", "models"):
        assert name in proc.stdout


def test_models_lists_the_registry():
    result = run("models")
    assert result.exit_code == 0
    rows = [ln for ln in result.output.splitlines() if ln and not ln.startswith("Parameters")]
    names = {line.split()[0] for line in rows}
    assert {"itemcf", "deepfm"} <= names
    assert names == set(models.available())
    itemcf = next(ln for ln in rows if ln.startswith("itemcf "))
    assert "retrieval" in itemcf and len(itemcf.split()) > 4  # and when to use it


def test_models_name_shows_typed_parameters_with_descriptions():
    result = run("models", "itemcf")
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"\n  k +int = 100\n", out) and "neighbours kept per item" in out
    assert "similarity" in out and "'cosine'" in out
    lightgcn = run("models", "lightgcn").output
    assert "epochs" in lightgcn and "= 60" in lightgcn and "passes over the training" in lightgcn
    bad = run("models", "itemfc")
    assert bad.exit_code == 2 and "did you mean 'itemcf'" in bad.output


# ---------------------------------------------------------------------------- datasets
def test_datasets_synth_then_inspect(tmp_path):
    out = tmp_path / "synth"
    result = run("datasets", "synth", "--size", "tiny", "--seed", 3, "--out", out)
    assert result.exit_code == 0, result.output
    for f in ("interactions.parquet", "users.parquet", "items.parquet"):
        assert (out / f).exists()
    n_rows = int(result.output.split()[1].replace(",", ""))

    result = run("datasets", "inspect", out)
    assert result.exit_code == 0, result.output
    lines = dict(ln.split(":", 1) for ln in result.output.splitlines() if ":" in ln)
    assert int(lines["rows"].strip().replace(",", "")) == n_rows
    assert "item features" in lines and "user features" in lines


def test_datasets_synth_rejects_unknown_size(tmp_path):
    result = run("datasets", "synth", "--size", "huge", "--out", tmp_path)
    assert result.exit_code == 2 and "tiny" in result.output


def test_inspect_malformed_line_names_file_and_line(bad_csv):
    err = assert_user_error(run("datasets", "inspect", bad_csv), "bad.csv", "line 4")
    assert "--skip-bad-rows" in err  # the hint is phrased for the CLI


def test_inspect_skip_bad_rows_reports_count(bad_csv):
    result = run("datasets", "inspect", bad_csv, "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    assert "rows:         4" in result.output
    assert "skipped rows: 1 (lines [4])" in result.output


def test_inspect_missing_file(tmp_path):
    assert_user_error(run("datasets", "inspect", tmp_path / "nope.csv"), "nope.csv")


# ---------------------------------------------------------------------------- train -> use
def _metrics(output: str) -> dict[str, float]:
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = float(parts[1])
    return out


def test_train_evaluate_recommend(als_dir, tmp_path):
    train_metrics = models.load(als_dir).metrics_
    result = run("evaluate", "--model", als_dir)
    assert result.exit_code == 0, result.output
    got = _metrics(result.output)
    for key in ("recall@5", "ndcg@10"):  # same job.json split, same model: same numbers
        assert got[key] == pytest.approx(train_metrics[key], abs=1e-4)

    model = models.load(als_dir)
    user = str(model.user_vocab_.raw_ids[3])
    result = run("recommend", "--model", als_dir, "--user", user, "-k", 5)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"user {user}:" and len(lines) == 6
    expected, _ = model.recommend([user], k=5)
    assert [int(ln.split()[1]) for ln in lines[1:]] == [int(i) for i in expected[0]]

    result = run("recommend", "--model", als_dir, "--user", user, "--user", "u0", "-k", 5, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == [user, "u0"] and len(data[user]) == 5
    assert [r["item"] for r in data[user]] == [int(i) for i in expected[0]]
    scores = [r["score"] for r in data[user]]
    assert scores == sorted(scores, reverse=True)
    seen = set(model.item_vocab_.ids(model.seen_[model.user_vocab_.index([user])].indices))
    assert not seen & {r["item"] for r in data[user]}


def test_recommend_answers_known_users_and_names_the_cold_ones(als_dir):
    model = models.load(als_dir)
    user = str(model.user_vocab_.raw_ids[3])
    result = run("recommend", "--model", als_dir, "--user", user, "--user", "nobody42", "-k", 3)
    assert result.exit_code == 0, result.output
    assert (
        f"user {user}:\n" in result.stdout and "user nobody42:  (cold: fallback)" in result.stdout
    )
    assert "cold" in result.stderr and "nobody42" in result.stderr
    popular, _ = model.recommend(["nobody42"], k=3, unknown="popular")
    tail = result.stdout.split("user nobody42:")[1].splitlines()[1:]
    assert [int(ln.split()[1]) for ln in tail] == [int(i) for i in popular[0]]


def test_recommend_and_evaluate_a_saved_recall_pipeline(tmp_path):
    from recforge.data.synth import make_synthetic
    from recforge.pipeline import RecallPipeline

    data = make_synthetic(**MICRO_SYNTH, seed=0)
    pipe = RecallPipeline.from_config(
        {"channels": [{"name": "icf", "model": "itemcf", "params": {"k": 10}, "quota": 5}]}
    ).fit(data)
    pipe.save(tmp_path / "pipe")
    user = data.frame["user"].iloc[0]
    result = run("recommend", "--model", tmp_path / "pipe", "--user", user, "--user", "zz", "-k", 4)
    assert result.exit_code == 0, result.output
    assert f"user {user}:" in result.stdout and "user zz:  (cold: fallback)" in result.stdout
    job = write_job(
        tmp_path / "job.yaml",
        data={"source": "synth", "size": "tiny", "synth": MICRO_SYNTH},
        model={"name": "itemcf"},
        evaluate={"k": [5]},
    )
    result = run("evaluate", "--model", tmp_path / "pipe", "--config", job)
    assert result.exit_code == 0, result.output
    assert "recall@5" in result.output


def test_evaluate_a_missing_folder_says_what_to_do(als_dir):
    err = assert_user_error(run("evaluate", "--model", als_dir.parent / "modle"), "no such")
    assert "did you mean" in err.lower() and "recforge train --config" in err


def test_evaluate_warns_when_the_test_data_is_not_the_models(als_dir, tmp_path):
    log = tmp_path / "other.csv"  # another catalogue: none of its items are the model's
    rows = [f"u{u},x{(u + j) % 40}" for u in range(40) for j in range(6)]
    log.write_text("user,item\n" + "\n".join(rows) + "\n")
    other = write_job(
        tmp_path / "other.yaml",
        data={"source": "file", "path": str(log)},
        split={"method": "random", "test_ratio": 0.2},
        evaluate={"k": [5]},
    )
    result = run("evaluate", "--model", als_dir, "--config", other)
    # the warning comes first; evaluation may then fail when nothing of the test is known
    assert result.exit_code in (0, 2), result.output
    assert "warning:" in result.stderr and "unknown to the model" in result.stderr


def test_train_refuses_to_overwrite_and_writes_metrics_and_report(tmp_path):
    config = write_job(
        tmp_path / "job.yaml",
        data={"source": "synth", "size": "tiny", "synth": MICRO_SYNTH},
        model={"name": "most_popular"},
        evaluate={"k": [5]},
        output=str(tmp_path / "out"),
    )
    assert run("train", "--config", config).exit_code == 0
    for name in ("manifest.json", "job.json", "metrics.json", "report.md", "report.html"):
        assert (tmp_path / "out" / name).exists(), name
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "recall@5" in metrics and "fit_seconds" in metrics
    assert_user_error(run("train", "--config", config), "already holds a model", "--overwrite")
    assert run("train", "--config", config, "--overwrite").exit_code == 0


def test_yaml_data_section_takes_the_column_mapping(tmp_path):
    log = tmp_path / "log.csv"
    rows = [f"U{u},S{(u * 7 + j) % 30},{j}" for u in range(30) for j in range(8)]
    log.write_text("uid,sku,ts\n" + "\n".join(rows) + "\n")
    config = write_job(
        tmp_path / "job.yaml",
        data={
            "source": "file",
            "path": str(log),
            "user_col": "uid",
            "item_col": "sku",
            "timestamp_col": "ts",
        },
        split={"method": "temporal", "test_ratio": 0.2},
        model={"name": "most_popular"},
        evaluate={"k": [5]},
        output=str(tmp_path / "out"),
    )
    result = run("train", "--config", config)
    assert result.exit_code == 0, result.output
    # a missing column is said in the job file's terms
    config = write_job(
        tmp_path / "bad.yaml",
        data={"source": "file", "path": str(log), "user_col": "uid"},
        model={"name": "most_popular"},
        output=str(tmp_path / "out2"),
    )
    assert_user_error(run("train", "--config", config), "data.item_col")


def test_recommend_needs_positive_k(als_dir):
    result = run("recommend", "--model", als_dir, "--user", "u1", "-k", 0)
    assert result.exit_code == 2 and "-k" in result.output


def test_recommend_rejects_a_ranker(tmp_path):
    config = write_job(
        tmp_path / "lr.yaml",
        data={"source": "synth", "size": "tiny", "synth": MICRO_SYNTH},
        model={"name": "lr", "params": {"epochs": 1, "batch_size": 256, "num_threads": 1}},
        evaluate={"n_negatives": 2},
        output=str(tmp_path / "lr"),
    )
    result = run("train", "--config", config)
    assert result.exit_code == 0, result.output
    assert 0 <= _metrics(result.output)["auc"] <= 1
    result = run("evaluate", "--model", tmp_path / "lr")
    assert result.exit_code == 0 and "gauc" in result.output
    assert_user_error(run("recommend", "--model", tmp_path / "lr", "--user", "u1"), "ranker")


def test_corrupt_model_directory(als_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(als_dir, broken)
    weights = broken / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    for cmd in (("recommend", "--model", broken, "--user", "u1"), ("evaluate", "--model", broken)):
        assert_user_error(run(*cmd), "weights.safetensors")
    assert_user_error(run("evaluate", "--model", tmp_path / "missing"), "missing")


# ---------------------------------------------------------------------------- bad jobs
def test_train_misspelt_key_suggests_the_right_one(tmp_path):
    config = write_job(tmp_path / "job.yaml", data={"source": "synth"}, modle={"name": "itemcf"})
    assert_user_error(run("train", "--config", config), "job.yaml", "'modle'", "'model'")
    config = write_job(tmp_path / "job2.yaml", model={"name": "itemcf", "params": {"kk": 5}})
    assert_user_error(run("train", "--config", config), "job2.yaml", "'kk'", "'k'")
    config = write_job(tmp_path / "job3.yaml", model={"name": "itemcff"})
    assert_user_error(run("train", "--config", config), "'itemcff'", "'itemcf'")


@pytest.mark.parametrize(
    "sections,needles",
    [
        (
            {"model": {"name": "itemcf", "params": {"k": "abc"}}},
            ["model.params.k", "'abc'", "integer"],
        ),
        ({"model": {"name": "itemcf", "params": {"k": 2.5}}}, ["model.params.k"]),
        ({"model": {"name": "deepfm", "params": {"hidden": "big"}}}, ["model.params.hidden"]),
        ({"split": {"test_ratio": "lots"}}, ["split.test_ratio", "number"]),
        ({"split": {"test_ratio": 1.5}}, ["split.test_ratio", "[0, 1)"]),
        ({"evaluate": {"k": ["ten"]}}, ["evaluate.k"]),
        ({"data": {"source": "ml-100", "size": "tiny"}}, ["data.source", "'ml-100k'"]),
        (
            {"data": {"source": "synth", "size": "tiny", "synth": {"n_userz": 5}}},
            ["data.synth", "n_users"],
        ),
        ({"data": {"source": "file"}}, ["data.path"]),
        ({"data": "synth"}, ["data", "mapping"]),
    ],
)
def test_train_bad_values_are_one_line_errors(tmp_path, sections, needles):
    sections.setdefault("data", {"source": "synth", "size": "tiny", "synth": MICRO_SYNTH})
    config = write_job(tmp_path / "job.yaml", **sections, output=str(tmp_path / "out"))
    assert_user_error(run("train", "--config", config), "job.yaml", *needles)
    assert not (tmp_path / "out").exists()


def test_train_missing_or_invalid_yaml(tmp_path):
    assert_user_error(run("train", "--config", tmp_path / "nope.yaml"), "nope.yaml", "not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: itemcf\n  params: {k: [1, 2\n")
    assert_user_error(run("train", "--config", bad), "bad.yaml", "line", "YAML")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    assert_user_error(run("train", "--config", scalar), "scalar.yaml", "mapping")


def test_train_output_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("not a directory")
    config = write_job(
        tmp_path / "job.yaml",
        data={"source": "synth", "size": "tiny", "synth": MICRO_SYNTH},
        model={"name": "most_popular"},
        output=str(tmp_path / "taken"),
    )
    assert_user_error(run("train", "--config", config), "taken")


def test_train_from_malformed_log(tmp_path, bad_csv):
    config = write_job(
        tmp_path / "job.yaml",
        data={"source": "file", "path": str(bad_csv)},
        split={"method": "random", "test_ratio": 0.4, "seed": 1},
        model={"name": "most_popular"},
        evaluate={"k": [1]},
        output=str(tmp_path / "out"),
    )
    assert_user_error(run("train", "--config", config), "bad.csv", "line 4", "data.skip_bad_rows")

    config = write_job(
        tmp_path / "skip.yaml",
        data={"source": "file", "path": str(bad_csv), "skip_bad_rows": True},
        split={"method": "random", "test_ratio": 0.4, "seed": 1},
        model={"name": "most_popular"},
        evaluate={"k": [1]},
        output=str(tmp_path / "out"),
    )
    result = run("train", "--config", config)
    assert result.exit_code == 0, result.output
    assert "skipped 1 malformed rows" in result.output


def test_train_model_error_is_one_line(tmp_path, monkeypatch):
    """A TypeError/ValueError from a model's own code (a value the type checks let through)
    is reported with the model name and params, not as a traceback."""
    import recforge.jobs

    def boom(job, progress=True, overwrite=False):
        raise ValueError("shrink must be finite")

    monkeypatch.setattr(recforge.jobs, "run_train", boom)
    config = write_job(tmp_path / "job.yaml", model={"name": "itemcf", "params": {"shrink": 1.0}})
    assert_user_error(run("train", "--config", config), "'itemcf'", "shrink", "ValueError")
    result = run("-vv", "train", "--config", config)
    assert result.exit_code == 2 and "Traceback" in result.stderr  # -vv shows it


def test_quickstart_rejects_unknown_size(tmp_path):
    result = run("quickstart", "--size", "gigantic", "--out", tmp_path)
    assert result.exit_code == 2 and "gigantic" in result.output


# ---------------------------------------------------------------------------- index
def test_index_build_and_load(als_dir, tmp_path):
    model = models.load(als_dir)
    out = tmp_path / "hnsw"
    result = run(
        "index", "build", "--model", als_dir, "--kind", "hnsw", "--ef-search", 40, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "recall@10 vs exact" in result.output
    ann = AnnIndex.load(out)
    assert ann.ntotal == model.n_items and ann.config.ef_search == 40

    out = tmp_path / "flat"
    result = run("index", "build", "--model", als_dir, "--kind", "flat", "--out", out)
    assert result.exit_code == 0, result.output
    assert "recall@10 vs exact on" in result.output and result.output.count("1.0000") == 1
    idx, scores = AnnIndex.load(out).search(model.user_vectors(np.arange(5)), 10)
    exact = model.score_users(np.arange(5))
    np.testing.assert_allclose(scores, -np.sort(-exact, axis=1)[:, :10], rtol=1e-4, atol=1e-5)


def test_index_build_errors(als_dir, tmp_path):
    n_items = models.load(als_dir).n_items  # < 256: too few for 8-bit PQ
    err = assert_user_error(
        run("index", "build", "--model", als_dir, "--kind", "ivf_pq", "--out", tmp_path / "pq"),
        "ivf_pq",
        str(n_items),
    )
    assert "--nbits" in err
    assert_user_error(
        run(
            "index",
            "build",
            "--model",
            als_dir,
            "--kind",
            "ivf_flat",
            "--nlist",
            10_000,
            "--out",
            tmp_path / "x",
        ),
        "--nlist",
    )
    result = run("index", "build", "--model", als_dir, "--kind", "annoy", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "annoy" in result.output


def test_index_needs_an_embedding_model(tmp_path):
    config = write_job(
        tmp_path / "job.yaml",
        data={"source": "synth", "size": "tiny", "synth": MICRO_SYNTH},
        model={"name": "itemcf", "params": {"k": 20}},
        output=str(tmp_path / "itemcf"),
    )
    assert run("train", "--config", config).exit_code == 0
    assert_user_error(
        run("index", "build", "--model", tmp_path / "itemcf", "--out", tmp_path / "i"),
        "'itemcf'",
        "als",
    )


def test_index_bench_model_and_synthetic(als_dir):
    result = run(
        "index", "bench", "--model", als_dir, "--kinds", "flat,hnsw,ivf_flat", "--queries", 40
    )
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln.split() for ln in result.output.splitlines()[2:]}
    assert set(rows) == {"flat", "hnsw", "ivf_flat"}
    assert float(rows["flat"][1]) == 1.0 and float(rows["hnsw"][1]) > 0.8

    result = run(
        "index",
        "bench",
        "--synthetic",
        "3000,16",
        "--kinds",
        "flat,ivf_flat",
        "--nprobe",
        2,
        "--queries",
        50,
        "--json",
    )
    assert result.exit_code == 0, result.output
    table = {r["index"]: r for r in json.loads(result.output)}
    assert table["flat"]["recall@10"] == 1.0
    assert 0 < table["ivf_flat"]["recall@10"] <= 1.0 and "nprobe=2" in table["ivf_flat"]["params"]
    assert table["ivf_flat"]["qps"] > 0


def test_index_bench_usage_errors(als_dir):
    for args in ((), ("--model", als_dir, "--synthetic", "10,4")):
        result = run("index", "bench", *args)
        assert result.exit_code == 2 and "exactly one of" in result.output
    result = run("index", "bench", "--synthetic", "ten,4")
    assert result.exit_code == 2 and "N,D" in result.output
    result = run("index", "bench", "--synthetic", "100,4", "--kinds", "flat,bogus")
    assert result.exit_code == 2 and "bogus" in result.output


def test_inspect_missing_column_hint_names_the_option(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("uid,item\nu1,1\n")
    assert_user_error(run("datasets", "inspect", log), "--user-col", "'uid'")


def test_split_hints_are_job_settings(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(
        "user,item\n" + "\n".join(f"u{u},{(u + j) % 9}" for u in range(9) for j in range(4)) + "\n"
    )
    config = write_job(
        tmp_path / "job.yaml",
        data={"source": "file", "path": str(log)},
        split={"method": "temporal", "test_ratio": 0.2},
        model={"name": "most_popular"},
        output=str(tmp_path / "out"),
    )
    err = assert_user_error(run("train", "--config", config), "data.timestamp_col")
    assert "Interactions.from_frame" not in err and "random_split" not in err
