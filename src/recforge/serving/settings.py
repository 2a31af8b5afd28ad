"""Typed server settings: ports, limits, threads, the model repository, feedback, keys
(``recforge serve`` options; API keys only from the environment, never the command line:
``RECFORGE_READ_KEYS``, ``RECFORGE_FEEDBACK_KEYS``, ``RECFORGE_ADMIN_KEYS``, comma-separated)."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field

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
    # the model repository (recforge serve --models ROOT)
    models_root: str | None = None  # <root>/<name>/<version>/; None: one --bundle
    model_names: tuple[str, ...] | None = None  # names that must be ready; None: every name
    version_policy: str = "latest"  # latest | latest:N | specific:V1,V2 (every name)
    poll_interval_s: float = 2.0  # how often the watcher rescans the root
    memory_budget_mb: float | None = None  # loaded versions' size on disk may not exceed it
    warmup_budget_ms: float = 2000.0  # a version whose warm-up is slower never serves
    runtime_file: str | None = None  # runtime parameters per name (serving/runtime.py)
    precomputed_dir: str | None = None  # a batch-recommend output (serving/precomputed.py)
    precomputed_max_age_s: float = 86_400.0  # its lists answer while younger than this
    loader_nice: int = 10  # loads run this many nice steps below the request threads
    # feedback
    feedback_url: str | None = None  # sqlite://PATH[?synchronous=NORMAL] or postgresql://...
    feedback_history: int = 50  # stored events read back as a request's history
    # security: keys from the environment (repr=False: never printed)
    read_keys: tuple[str, ...] = field(default=(), repr=False)
    feedback_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    rate_limit_rps: float = 0.0  # per client (API key, else address); 0: no limit
    rate_limit_burst: int | None = None  # requests at once; default: the rate

    def __post_init__(self) -> None:
        for name in ("port", "max_body_bytes", "threads", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"server.{name}: must be a positive integer, got {value!r}.")
        if self.poll_interval_s <= 0 or self.warmup_budget_ms <= 0 or self.feedback_history < 0:
            raise ConfigError(
                "server: poll_interval_s and warmup_budget_ms must be > 0, feedback_history >= 0."
            )
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise ConfigError(f"server: grpc_port and port are both {self.port}; pick two ports.")

    def with_env_keys(self, env: dict[str, str] | None = None) -> ServerSettings:
        """These settings with the API keys of ``RECFORGE_{READ,FEEDBACK,ADMIN}_KEYS``."""
        from dataclasses import replace

        from recforge.serving.security import ApiKeys

        env = os.environ if env is None else env
        keys = ApiKeys.from_strings(
            env.get("RECFORGE_READ_KEYS", ""),
            env.get("RECFORGE_FEEDBACK_KEYS", ""),
            env.get("RECFORGE_ADMIN_KEYS", ""),
        )
        return replace(
            self, read_keys=keys.read, feedback_keys=keys.feedback, admin_keys=keys.admin
        )

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
