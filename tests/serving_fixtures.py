"""A tiny serving bundle for the serving tests: synthetic data with user, item and context
features, ItemCF + ALS (through HNSW) + EASE channels, a DeepFM ranker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from recforge import models
from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic
from recforge.pipeline import RecallPipeline
from recforge.serving import write_bundle

RECALL = {
    "channels": [
        {"name": "itemcf", "model": "itemcf", "params": {"k": 30}, "quota": 60},
        {
            "name": "als",
            "model": "als",
            "params": {"factors": 8, "iterations": 3, "num_threads": 1},
            "quota": 60,
            "index": {"kind": "hnsw", "hnsw_m": 8},
        },
        {"name": "ease", "model": "ease", "params": {"l2": 50.0}, "quota": 40},
    ],
    "fallback": "most_popular",
    "k": 120,
}


def tiny_log():
    return make_synthetic(**SIZES["tiny"], seed=0)


def build_tiny_bundle(path: Path, rerank: dict | None = None, ranker: bool = True) -> Path:
    inter = tiny_log()
    pipe = RecallPipeline.from_config(RECALL).fit(inter)
    rk = None
    if ranker:
        frame = make_ctr_frame(inter, n_negatives=2, seed=1)
        rk = models.get(
            "deepfm", epochs=1, embedding_dim=4, hidden=(16,), batch_size=512, num_threads=1
        ).fit(frame, label="label")
    return write_bundle(
        path,
        pipeline=pipe,
        ranker=rk,
        user_features=inter.user_features,
        item_features=inter.item_features,
        rerank=rerank or {"rank_top": 50},
        name="tiny",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``recforge serve`` as a real process on loopback; stopped on exit."""

    def __init__(self, bundle: Path, *extra: str) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        src = str(Path(__file__).resolve().parents[1] / "src")
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [
            sys.executable,
            "-m",
            "recforge.cli.main",
            "serve",
            "--bundle",
            str(bundle),
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            *extra,
        ]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server not ready in time")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out
