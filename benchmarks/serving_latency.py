"""Online serving latency: a 100k-item bundle under open-loop load, REST and gRPC.

The bundle: a synthetic log (30k users, ~100k items, 900k interactions, user/item/context
features); three recall channels giving 500 candidates (ItemCF 200, ALS 200 through a Faiss
HNSW index, BPR 100 through Faiss IVF-Flat); DeepFM over the best 200; top 20. First the
in-process ``Recommender.recommend`` call (p50/p99 and per-stage medians from the explain
trace), then ``recforge serve`` in its own process on loopback with a load generator in this
one (open loop: requests are sent on a fixed schedule and latency counts from the scheduled
time, so a slow server cannot hide queueing) at 50, 100 and 200 requests/s, REST then gRPC,
each for ``--seconds``. Server and load generator share the machine's cores.

    nice -n 10 python -m benchmarks.serving_latency --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SECTION = "## Serving"
COMMAND = "nice -n 10 python -m benchmarks.serving_latency --docs docs/BENCHMARKS.md"
SIZE = {
    "n_users": 30_000,
    "n_items": 200_000,
    "n_interactions": 900_000,
    "n_categories": 50,
}  # ~100k items in the log
RATES = (50, 100, 200)


def build(out: Path, size: dict[str, int], seed: int = 0) -> tuple[Path, list[Any]]:
    """Write the benchmark bundle to ``out``; returns (its path, user ids to ask for)."""
    from recforge import models
    from recforge.data.synth import make_ctr_frame, make_synthetic
    from recforge.pipeline import RecallPipeline
    from recforge.serving import write_bundle

    t0 = time.perf_counter()
    inter = make_synthetic(**size, dim=16, seed=seed)
    log.info("data %s in %.0fs", inter, time.perf_counter() - t0)
    pipe = RecallPipeline.from_config(
        {
            "channels": [
                {"name": "itemcf", "model": "itemcf", "params": {"k": 50}, "quota": 200},
                {
                    "name": "als",
                    "model": "als",
                    "params": {"factors": 32, "iterations": 8, "num_threads": 1},
                    "quota": 200,
                    "index": {"kind": "hnsw", "ef_search": 128},
                },
                {
                    "name": "bpr",
                    "model": "bpr",
                    "params": {"factors": 32, "iterations": 30, "num_threads": 1},
                    "quota": 100,
                    "index": {"kind": "ivf_flat", "nprobe": 16},
                },
            ],
            "fallback": "most_popular",
            "k": 500,
        }
    ).fit(inter)
    log.info("recall fitted at %.0fs", time.perf_counter() - t0)
    frame = make_ctr_frame(inter.subset(np.arange(min(len(inter), 100_000))), n_negatives=2, seed=1)
    ranker = models.get(
        "deepfm", epochs=1, embedding_dim=16, hidden=(128, 64), batch_size=4096, num_threads=1
    ).fit(frame, label="label")
    log.info("ranker fitted at %.0fs", time.perf_counter() - t0)
    write_bundle(
        out,
        pipeline=pipe,
        ranker=ranker,
        user_features=inter.user_features,
        item_features=inter.item_features,
        rerank={"rank_top": 200},
        name="bench",
    )
    users = list(np.random.default_rng(seed).choice(inter.users, 2000, replace=False))
    return out, [u.item() if hasattr(u, "item") else u for u in users]


def in_process(bundle: Path, users: list[Any], n: int = 500) -> dict[str, Any]:
    """The pure in-process call: latency percentiles and per-stage medians (ms)."""
    from recforge.serving.core import Recommender
    from recforge.serving.settings import apply_threads

    rec = Recommender.load(bundle)
    apply_threads(1)
    for u in users[:20]:  # warm caches
        rec.recommend(u, k=20)
    lat, stages = [], []
    for u in users[:n]:
        t0 = time.perf_counter()
        r = rec.recommend(u, k=20, context={"device": "mobile"}, explain=True)
        lat.append((time.perf_counter() - t0) * 1e3)
        stages.append(r.trace["stage_ms"])
    out = _pcts(np.asarray(lat))
    out["stages_p50_ms"] = {
        s: round(float(np.median([x[s] for x in stages])), 2) for s in stages[0]
    }
    out["n_items"] = len(rec.catalogue)
    out["n_candidates"] = int(
        np.median([len(rec.pipeline.candidates(u).items) for u in users[:50]])
    )
    return out


def _pcts(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "n": int(len(ms)),
    }


async def _open_loop(
    send: Any, users: list[Any], rate: float, seconds: float, keep: bool = False
) -> dict[str, Any]:
    """Send ``rate`` requests/s for ``seconds`` on a fixed schedule; latency from the
    scheduled send time. Returns percentiles, errors and the rate achieved (and every
    latency under ``latencies`` with ``keep``)."""
    n = int(rate * seconds)
    start = time.perf_counter() + 0.2
    lat = np.full(n, np.nan)
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        t_sched = start + i / rate
        delay = t_sched - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await send(users[i % len(users)])
            lat[i] = (time.perf_counter() - t_sched) * 1e3
        except Exception as e:  # counted, never raised: the run goes on
            errors += 1
            log.debug("request failed: %s", e)

    await asyncio.gather(*(one(i) for i in range(n)))
    ok = lat[~np.isnan(lat)]
    out = _pcts(ok) if len(ok) else {"p50_ms": None, "p99_ms": None, "n": 0}
    out.update(errors=errors, rate=rate, sent=n)
    if keep:
        out["latencies"] = ok.tolist()
    return out


class _HttpPool:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator shares
    the cores with the server, so it should cost as little CPU per request as possible
    (a full client such as httpx costs about as much as the server's own work)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.free: asyncio.Queue = asyncio.Queue()
        self.size, self.opened = size, 0

    async def _conn(self) -> tuple[Any, Any]:
        if self.free.empty() and self.opened < self.size:
            self.opened += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self.free.get()

    async def post(self, path: str, body: bytes) -> bytes:
        reader, writer = await self._conn()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        status = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        data = await reader.readexactly(length)
        self.free.put_nowait((reader, writer))
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"HTTP {status.decode().strip()}: {data[:200]!r}")
        return data

    async def close(self) -> None:
        while not self.free.empty():
            _, writer = self.free.get_nowait()
            writer.close()


def under_load(
    bundle: Path, users: list[Any], rates=RATES, seconds: float = 10.0
) -> dict[str, Any]:
    import grpc

    from recforge.serving.demo import ServerProcess
    from recforge.serving.protos import recforge_pb2 as pb
    from recforge.serving.protos import recforge_pb2_grpc as pb_grpc

    results: dict[str, Any] = {"rest": {}, "grpc": {}}
    with ServerProcess(bundle, "--threads", "1") as srv:

        async def rest_run(rate: float) -> dict[str, Any]:
            pool = _HttpPool("127.0.0.1", srv.port, size=32)
            try:

                async def send(u: Any) -> None:
                    body = {"user": u, "k": 20, "context": {"device": "mobile"}}
                    await pool.post("/v1/recommend", json.dumps(body).encode())

                for u in users[:20]:
                    await send(u)
                return await _open_loop(send, users, rate, seconds)
            finally:
                await pool.close()

        async def grpc_run(rate: float) -> dict[str, Any]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
                stub = pb_grpc.RecommenderStub(channel)

                async def send(u: Any) -> None:
                    await stub.Recommend(
                        pb.RecommendRequest(
                            user=str(u), k=20, context={"device": pb.Value(s="mobile")}
                        ),
                        timeout=10,
                    )

                for u in users[:20]:
                    await send(u)
                return await _open_loop(send, users, rate, seconds)

        for rate in rates:
            results["rest"][rate] = asyncio.run(rest_run(rate))
            log.info("rest %s rps: %s", rate, results["rest"][rate])
        for rate in rates:
            results["grpc"][rate] = asyncio.run(grpc_run(rate))
            log.info("grpc %s rps: %s", rate, results["grpc"][rate])
    return results


def run(
    data_dir: Any = None,
    out: str | Path | None = None,
    size: dict[str, int] | None = None,
    seconds: float = 10.0,
    rates=RATES,
) -> dict[str, Any]:
    """Build the bundle, measure in-process and under load; returns the result with its
    ``markdown`` section."""
    import tempfile

    load_before = os.getloadavg()
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="recforge-serving-bench-"))
    t0 = time.perf_counter()
    users_file = work / "users.json"
    reused = (work / "bundle" / "bundle.json").is_file() and users_file.is_file()
    if reused:  # --out of an earlier run: its bundle
        bundle, users = work / "bundle", json.loads(users_file.read_text())
    else:
        bundle, users = build(work / "bundle", size or SIZE)
        users_file.write_text(json.dumps(users))
    build_s = time.perf_counter() - t0
    inproc = in_process(bundle, users)
    loaded = under_load(bundle, users, rates=rates, seconds=seconds)
    result = {
        "size": size or SIZE,
        "build_s": None if reused else round(build_s, 1),
        "in_process": inproc,
        "load": loaded,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "date": _dt.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    result["markdown"] = markdown(result)
    if out:
        (Path(out) / "serving_latency.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def markdown(r: dict[str, Any]) -> str:
    s, ip = r["size"], r["in_process"]
    lines = [
        "### Online latency: 100k-item bundle, REST and gRPC under open-loop load",
        "",
        f"`{COMMAND}` ({r['date']}, {r['cpus']} cores shared by server and load generator, "
        f"load average {r['loadavg_before'][0]} before / {r['loadavg_after'][0]} after).",
        "",
        f"Bundle: synthetic log of {s['n_users']:,} users and {s['n_interactions']:,} "
        f"interactions over {ip['n_items']:,} items; ItemCF 200 + ALS 200 (HNSW) + BPR 100 (IVF-Flat) "
        f"-> {ip['n_candidates']} merged candidates, DeepFM over the best 200, top 20 "
        + (
            f"(built in {r['build_s']} s). "
            if r["build_s"] is not None
            else "(the bundle of an earlier run with the same --out). "
        )
        + "Torch on 1 thread; one server process serves REST and gRPC.",
        "",
        f"In-process `Recommender.recommend` ({ip['n']} calls): p50 {ip['p50_ms']} ms, "
        f"p99 {ip['p99_ms']} ms. Stage medians (ms): "
        + ", ".join(f"{k} {v}" for k, v in ip["stages_p50_ms"].items())
        + ".",
        "",
        "| protocol | rate (req/s) | sent | errors | p50 ms | p99 ms | p50 / in-process p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for proto in ("rest", "grpc"):
        for rate, m in r["load"][proto].items():
            ratio = round(m["p50_ms"] / ip["p50_ms"], 2) if m.get("p50_ms") else "-"
            lines.append(
                f"| {proto.upper() if proto == 'rest' else 'gRPC'} | {rate} | {m['sent']} | "
                f"{m['errors']} | {m['p50_ms']} | {m['p99_ms']} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        default=None,
        help="folder for the bundle and serving_latency.json (a bundle already there is reused)",
    )
    p.add_argument("--docs", default=None, help="markdown file to update, e.g. docs/BENCHMARKS.md")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per load level")
    p.add_argument("--small", action="store_true", help="a 5k-item bundle (a quick check)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    size = (
        {"n_users": 2_000, "n_items": 5_000, "n_interactions": 60_000, "n_categories": 20}
        if a.small
        else None
    )
    r = run(out=a.out, size=size, seconds=a.seconds)
    print(r["markdown"])
    if a.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(r['markdown'], a.docs, SECTION)}")


if __name__ == "__main__":
    main()
