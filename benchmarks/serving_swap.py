"""Recommend latency while new versions load beside the serving one, against steady state.

The bundle is ``benchmarks.serving_latency``'s (three recall channels, one through Faiss
HNSW, DeepFM over the top 200), built at ``SIZE``. ``recforge serve --models ROOT`` runs in
its own process on loopback (watcher polling every 0.2 s); the load generator in this one
sends REST recommends open-loop (latency from the scheduled send time) at ``RATE``/s in
alternating phases of ``SECONDS`` each, ``ROUNDS`` times: steady state, then a phase during
which a new copy of the bundle is published each time the previous one has taken over (each
load: verify every file's checksum, load the parts, warm-up, beside the serving version).
The copies are made before the phase (hidden directories beside the versions, with their
READY marker) and published by one ``rename`` during it, which is how ``recforge models
publish`` ends: the phase measures the server loading, not this process copying 66 MiB.
Between phases (unmeasured) the last load finishes and the old version unloads. Alternating keeps a
shared machine's drifting load out of the comparison. Server and load generator share the
machine's cores.

    nice -n 10 python -m benchmarks.serving_swap --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import REPO
from benchmarks.serving_feedback import write_docs

SECTION = "## Serving: latency while a version loads"
COMMAND = "nice -n 10 python -m benchmarks.serving_swap --docs docs/BENCHMARKS.md"
SIZE = {"n_users": 10_000, "n_items": 60_000, "n_interactions": 300_000, "n_categories": 30}
RATE, SECONDS, ROUNDS = 20.0, 5.0, 3
STAGED = 2  # copies staged per loading phase (a load takes 2-8 s on a shared machine)


def _start(root: Path, port: int, loader_nice: int = 10) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    cmd = [sys.executable, "-m", "recforge.cli.main", "serve", "--models", str(root),
           "--port", str(port), "--grpc-port", "0", "--poll-interval", "0.2",
           "--warmup-budget-ms", "10000", "--loader-nice", str(loader_nice)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the server did not get ready")


def _stage(bundle: Path, dest: Path, i: int) -> Path:
    """A complete copy beside the versions, hidden from the scanner until renamed."""
    from recforge.serving.repository import MARKER

    tmp = dest / f".stage-{i}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundle, tmp)
    (tmp / MARKER).write_text("{}")
    return tmp


def _settle(url: str, dest: Path, timeout: float = 120.0) -> None:
    """Wait until the newest version serves alone (no load or unload left in progress)."""
    import httpx

    newest = _next_version(dest) - 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (entry,) = httpx.get(url + "/v1/models", timeout=10).json()["models"]
        if [v["version"] for v in entry["versions"]] == [newest]:
            return
        time.sleep(0.1)
    raise TimeoutError(f"version {newest} did not take over in {timeout} s")


def _next_version(dest: Path) -> int:
    return max((int(p.name) for p in dest.iterdir() if p.name.isdigit()), default=0) + 1


def run(
    data_dir: Any = None,
    out: str | Path | None = None,
    size: dict[str, int] | None = None,
    seconds: float = SECONDS,
    rate: float = RATE,
    rounds: int = ROUNDS,
    command: str = COMMAND,
    loader_nice: int = 10,
) -> dict[str, Any]:
    import httpx
    import numpy as np

    from benchmarks.serving_latency import _open_loop, build
    from recforge.serving.demo import free_port
    from recforge.serving.repository import publish

    load_before = os.getloadavg()
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="recforge-swap-bench-"))
    bundle = work / "bundle"
    if (bundle / "bundle.json").is_file():  # reuse a bundle built by an earlier run in ``out``
        from recforge.serving.core import Recommender

        users = list(Recommender.load(bundle).pipeline.channels[0].model.user_vocab_.raw_ids)
        users = [u.item() if hasattr(u, "item") else u for u in users[:2000]]
    else:
        bundle, users = build(bundle, size or SIZE)
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    publish(bundle, root / "bench")
    port = free_port()
    proc = _start(root, port, loader_nice)
    url = f"http://127.0.0.1:{port}"
    lat: dict[str, list[float]] = {"steady": [], "loading": []}
    errors = {"steady": 0, "loading": 0}
    swaps: list[float] = []
    try:

        async def phase() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:

                async def send(u: Any) -> None:
                    body = {"user": u, "k": 20, "context": {"device": "mobile"}}
                    (await client.post("/v1/recommend", json=body)).raise_for_status()

                for u in users[:20]:
                    await send(u)
                return await _open_loop(send, users, rate, seconds, keep=True)

        for _ in range(rounds):
            r = asyncio.run(phase())
            lat["steady"] += r["latencies"]
            errors["steady"] += r["errors"]
            stop = threading.Event()
            staged = [_stage(bundle, root / "bench", i) for i in range(STAGED)]

            def publisher(
                stop: threading.Event = stop, staged: list[Path] = staged
            ) -> None:  # a new version once the last serves
                while not stop.is_set() and staged:
                    v = _next_version(root / "bench")
                    os.rename(staged.pop(0), root / "bench" / str(v))  # what publish ends with
                    t0 = time.perf_counter()
                    while not stop.is_set():
                        models = httpx.get(url + "/v1/models", timeout=10).json()["models"]
                        if models[0]["default_version"] == v:
                            swaps.append(time.perf_counter() - t0)
                            break
                        time.sleep(0.05)

            t = threading.Thread(target=publisher)
            t.start()
            r = asyncio.run(phase())
            stop.set()
            t.join()
            lat["loading"] += r["latencies"]
            errors["loading"] += r["errors"]
            _settle(url, root / "bench")  # unmeasured: the last load ends, the old version goes
            for d in staged:  # not published in time
                shutil.rmtree(d)
        models = httpx.get(url + "/v1/models", timeout=10).json()["models"]
    finally:
        proc.terminate()
        proc.wait(30)

    def pcts(name: str) -> dict[str, Any]:
        x = np.asarray(lat[name])
        return {
            "p50_ms": round(float(np.percentile(x, 50)), 2) if len(x) else None,
            "p99_ms": round(float(np.percentile(x, 99)), 2) if len(x) else None,
            "n": int(len(x)),
            "errors": errors[name],
        }

    load_s = [v["load_seconds"] for v in models[0]["versions"] if v["load_seconds"]]
    r = {
        "size": size or SIZE,
        "rate": rate,
        "seconds": seconds,
        "rounds": rounds,
        "loader_nice": loader_nice,
        "steady": pcts("steady"),
        "while_loading": pcts("loading"),
        "versions_swapped": len(swaps),
        "publish_to_serving_s": [round(x, 2) for x in swaps],
        "last_load_seconds": load_s,
        "bundle_mb": round(
            sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20, 1
        ),
        "date": _dt.date.today().isoformat(),
        "command": command,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    r["markdown"] = to_markdown(r)
    if out:
        (Path(out) / "serving_swap.json").write_text(json.dumps(r, indent=2, default=str))
    return r


def to_markdown(r: dict[str, Any]) -> str:
    s = r["size"]
    lines = [
        SECTION,
        "",
        f"`{r['command']}` ({r['date']}; {r['cpus']} cores shared with other jobs, load average "
        f"{r['loadavg_before'][0]} before, {r['loadavg_after'][0]} after). Bundle of "
        f"{s['n_items']:,} items / {s['n_users']:,} users ({r['bundle_mb']} MiB on disk), "
        f"REST recommends open-loop at {r['rate']:.0f}/s, {r['rounds']} rounds of a "
        f"{r['seconds']:.0f} s steady phase and a {r['seconds']:.0f} s phase in which new "
        f"versions were published (copied before the phase, renamed into place during it), "
        f"each as soon as the previous one served: "
        f"{r['versions_swapped']} version(s) took over, publish to serving "
        f"{', '.join(f'{x:.1f}' for x in r['publish_to_serving_s'])} s.",
        "",
        "| phase | p50 ms | p99 ms | errors | requests |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, key in (("steady", "steady"), ("while new versions load", "while_loading")):
        x = r[key]
        lines.append(f"| {name} | {x['p50_ms']} | {x['p99_ms']} | {x['errors']} | {x['n']} |")
    lines += [
        "",
        "A version loads inside the serving process, beside the one serving: checksums, "
        "Parquet, Faiss and torch loading and the warm-up share the cores (and the GIL) with "
        "the requests, which is what moves the latency while versions load"
        + (
            "; no request failed."
            if not r["steady"]["errors"] + r["while_loading"]["errors"]
            else "."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="work folder (bundle, root, serving_swap.json)")
    p.add_argument("--docs", default=None, help=f"update this markdown file's '{SECTION}'")
    p.add_argument("--seconds", type=float, default=SECONDS, help="per phase")
    p.add_argument("--rate", type=float, default=RATE)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--loader-nice", type=int, default=10, help="recforge serve --loader-nice")
    a = p.parse_args()
    r = run(
        out=a.out,
        seconds=a.seconds,
        rate=a.rate,
        rounds=a.rounds,
        loader_nice=a.loader_nice,
        command="nice -n 10 python -m benchmarks.serving_swap " + " ".join(sys.argv[1:]),
    )
    print(r["markdown"])
    if a.docs:
        write_docs(a.docs, r)


if __name__ == "__main__":
    main()
