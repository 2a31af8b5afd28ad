"""A real server process on loopback, asked one REST and one gRPC question: how ``make run``
ends, and what the end-to-end tests use.

    with ServerProcess("runs/x/bundle") as srv:
        srv.rest("/v1/recommend", {"user": "u1", "k": 5})
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``recforge serve --bundle DIR`` in a child process on free loopback ports."""

    def __init__(self, bundle: str | Path, *extra: str) -> None:
        self.bundle = Path(bundle)
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> ServerProcess:
        src = str(Path(__file__).resolve().parents[2])  # the recforge package's parent
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [
            sys.executable, "-m", "recforge.cli.main", "serve", "--bundle", str(self.bundle),
            "--port", str(self.port), "--grpc-port", str(self.grpc_port), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/ready", timeout=1.0) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the server did not get ready within {timeout:.0f}s")

    def rest(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST ``body`` (GET without one) as JSON; returns the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def grpc_stub(self) -> Any:
        import grpc

        from recforge.serving.protos import recforge_pb2_grpc as pb_grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        self._channel = channel
        return pb_grpc.RecommenderStub(channel)

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); returns what it printed."""
        if getattr(self, "_channel", None) is not None:
            self._channel.close()
        if self.proc is None:
            return ""
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.proc = None
        return out or ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _pb_value(v: Any) -> Any:
    """A JSON scalar as the gRPC ``Value`` message (bool before int: a bool is an int)."""
    from recforge.serving.protos import recforge_pb2 as pb

    if isinstance(v, bool):
        return pb.Value(b=v)
    if isinstance(v, int):
        return pb.Value(i=v)
    if isinstance(v, float):
        return pb.Value(d=v)
    return pb.Value(s=str(v))


def ask_server(
    bundle: str | Path, user: Any, echo: Any = print, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Start a server on ``bundle``, send one recommend request through REST (with the
    explain trace) and one through gRPC, both with the request ``context`` (ranker features
    such as device and time of day) when given, print both and the curl line, stop the
    server. Returns {"rest": ..., "grpc_items": [...]}."""
    from recforge.serving.protos import recforge_pb2 as pb

    ask = {"user": user, "k": 5} | ({"context": context} if context else {})

    echo(f"serve: starting `recforge serve --bundle {bundle}` on loopback ...")
    t0 = time.perf_counter()
    with ServerProcess(bundle) as srv:
        echo(
            f"serve: ready in {time.perf_counter() - t0:.1f}s at {srv.url} (gRPC :{srv.grpc_port})"
        )
        rest = srv.rest("/v1/recommend", ask | {"explain": True})
        echo(f"REST  POST /v1/recommend {json.dumps(ask)}")
        for e, t in zip(rest["items"], rest["trace"]["items"]):
            echo(
                f"  {t['position'] + 1}. item {e['item']}  score {e['score']:.4f}  "
                f"found by {'+'.join(t['found_by'])} (recall rank {t['recall_rank']})"
            )
        ms = rest["trace"]["stage_ms"]
        echo("  stages (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()))
        pb_context = {k: _pb_value(v) for k, v in (context or {}).items()}
        g = srv.grpc_stub().Recommend(pb.RecommendRequest(user=str(user), k=5, context=pb_context))
        grpc_items = [e.item for e in g.items]
        same = grpc_items == [str(e["item"]) for e in rest["items"]]
        shown = f"user={user!r}, k=5" + (f", context={context}" if context else "")
        echo(
            f"gRPC  Recommend({shown}) -> {grpc_items} ({'same' if same else 'DIFFERENT'} as REST)"
        )
        curl = (
            f"curl -s -X POST {srv.url}/v1/recommend -H 'content-type: application/json' "
            f"-d '{json.dumps(ask | {'explain': True})}'"
        )
    echo(
        "serve: stopped. Keep one running with `make serve` (or `recforge serve --bundle "
        f"{bundle}`), then: {curl.replace(srv.url, 'http://127.0.0.1:8501')}"
    )
    return {"rest": rest, "grpc_items": grpc_items}
