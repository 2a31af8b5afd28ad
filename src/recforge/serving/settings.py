"""Typed server settings: ports, limits, threads (``recforge serve`` options or env)."""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass

from recforge.exceptions import ConfigError


@dataclass
class ServerSettings:
    """What ``recforge serve`` and ``create_app`` need besides the models."""

    host: str = "127.0.0.1"  # bind address; loopback unless you mean to expose the server
    port: int = 8501  # REST (the TF Serving REST port)
    grpc_port: int | None = 8500  # gRPC; None: no gRPC server
    max_body_bytes: int = 256 * 1024  # larger request bodies are refused with 413
    threads: int = 1  # torch intra-op threads, set once at start-up (requests are parallel)
    workers: int = 1  # REST worker processes

    def __post_init__(self) -> None:
        for name in ("port", "max_body_bytes", "threads", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"server.{name}: must be a positive integer, got {value!r}.")
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise ConfigError(f"server: grpc_port and port are both {self.port}; pick two ports.")

    @property
    def loopback(self) -> bool:
        """Whether the server binds a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def apply_threads(n: int) -> None:
    """The process's thread count, once at start-up: the default of every model
    (``recforge.threads``) and torch's intra-op pool if a torch model is loaded. Requests
    run in parallel threads; none of them changes it."""
    from recforge.threads import set_default_threads, set_torch_threads

    set_default_threads(n)
    if "torch" in sys.modules:
        set_torch_threads(n)
