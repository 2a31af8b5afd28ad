"""The quickstart report and the service's /ui page, opened in headless Chromium.

Chromium (Debian package ``chromium``) is installed by the ``chromium`` fixture when it is
missing and the tests run as root with apt-get (``apt-get update`` then
``apt-get install -y chromium``, as on a fresh CI machine); where it cannot be installed,
the tests skip and say why. Each page is loaded with the flags below; the test fails on a
console error, a page that renders blank (its screenshot no larger than a blank page's)
or a section missing from the DOM after its scripts ran. docs/quickstart-report.png is
the same screenshot of a ``recforge quickstart`` run at the default size (small);
``RECFORGE_UPDATE_SCREENSHOT=1`` writes this test's (tiny) one there instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NAMES = ("chromium", "chromium-browser", "google-chrome")

pytestmark = pytest.mark.xdist_group("browser")


def _find() -> str | None:
    return next((p for p in map(shutil.which, NAMES) if p), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"chromium could not be installed ({' '.join(cmd)}): {r.stderr[-300:]}")
    return _find() or pytest.skip("apt-get installed chromium but no chromium binary is on PATH")


def run_chromium(binary: str, url: str, out: Path, *, height: int = 3000) -> tuple[str, list[str]]:
    """Load ``url``; returns (the DOM after scripts ran, console messages). Writes the
    screenshot to ``out``."""
    common = [
        *FLAGS,
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=8000",
        f"--window-size=1200,{height}",
        "--hide-scrollbars",
        f"--user-data-dir={out.parent / 'profile'}",
    ]
    dom = subprocess.run(
        [binary, *common, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    shot = subprocess.run(
        [binary, *common, f"--screenshot={out}", url], capture_output=True, text=True, timeout=120
    )
    assert out.exists(), f"no screenshot: {shot.stderr[-500:]}"
    console = [ln for ln in (dom.stderr + shot.stderr).splitlines() if "CONSOLE" in ln]
    return dom.stdout, console


def errors(console: list[str]) -> list[str]:
    return [ln for ln in console if ":ERROR:" in ln or "Uncaught" in ln or "error" in ln.lower()]


def not_blank(binary: str, shot: Path, tmp: Path) -> None:
    blank = tmp / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    ref = tmp / "blank.png"
    run_chromium(binary, blank.as_uri(), ref)
    assert shot.stat().st_size > 5 * ref.stat().st_size, "the page rendered (nearly) blank"


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    from recforge import quickstart as qs

    out = tmp_path_factory.mktemp("qs")
    small = {
        "deepfm": {"epochs": 1, "embedding_dim": 4, "hidden": (16,)},
        "lr": {"epochs": 1},
        "dcnv2": {"epochs": 1, "embedding_dim": 4, "hidden": (16,)},
        "lightgbm": {"n_estimators": 20},
    }
    saved = dict(qs.RANKERS)
    qs.RANKERS.update(small)
    try:
        qs.run(out, size="tiny", echo=lambda *_: None, serve=False)
    finally:
        qs.RANKERS.clear()
        qs.RANKERS.update(saved)
    return out


def test_quickstart_report_in_chromium(chromium, quickstart_run, tmp_path):
    shot = tmp_path / "report.png"
    dom, console = run_chromium(
        chromium, (quickstart_run / "report.html").as_uri(), shot, height=2400
    )
    assert not errors(console), console
    for title in (
        "Served funnel replay",
        "Item popularity long tail",
        "Recall@K, K = 5..100",
        "Recall channels",
        "ROC curve",
        "Calibration",
        "Training loss",
    ):
        assert re.search(rf"<h2>{re.escape(title)}", dom), f"section {title!r} missing"
    assert dom.count("<svg") >= 10
    not_blank(chromium, shot, tmp_path)
    if os.environ.get("RECFORGE_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "quickstart-report.png")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    from recforge.serving.demo import ServerProcess
    from tests.serving_fixtures import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path_factory.mktemp("ui") / "bundle")
    saved = os.environ.get("RECFORGE_READ_KEYS")
    os.environ["RECFORGE_READ_KEYS"] = "ui-test-key-0123456789"
    proc = ServerProcess(bundle)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        if saved is None:
            os.environ.pop("RECFORGE_READ_KEYS", None)
        else:
            os.environ["RECFORGE_READ_KEYS"] = saved


def test_ui_page_in_chromium_with_an_api_key(chromium, keyed_server, tmp_path):
    import httpx

    from tests.serving_fixtures import tiny_log

    base = keyed_server.url
    assert httpx.get(f"{base}/v1/models", timeout=10).status_code in (401, 403)  # keyed
    user = tiny_log().users[0]
    shot = tmp_path / "ui.png"
    dom, console = run_chromium(
        chromium, f"{base}/ui#key=ui-test-key-0123456789&user={user}&k=5", shot
    )
    assert not errors(console), console
    for section in ("models", "traffic", "stages", "feedback", "try"):
        assert f'id="{section}"' in dom, section
    models = dom.split('id="models"')[1].split("</section>")[0]
    assert "tiny" in models and "available" in models  # the loaded bundle and its state
    trial = dom.split('id="try-result"')[1].split("</section>")[0]
    assert "found by" in trial and "ranker score" in trial  # the explain trace as a table
    assert trial.count("<tr>") >= 5 + 1
    traffic = dom.split('id="traffic"')[1].split("</section>")[0]
    assert "/v1/recommend" in traffic or "recommend" in traffic
    not_blank(chromium, shot, tmp_path)

    # without the key the page says what is missing instead of showing data
    dom, _ = run_chromium(chromium, f"{base}/ui", tmp_path / "nokey.png")
    assert "enter an API key" in dom and "available" not in dom
