"""How many threads recforge's compute uses, decided in one place.

Every model that runs parallel code takes ``num_threads: int | None = None`` (the torch
models, ALS/BPR through implicit, Item2Vec/DeepWalk/Node2Vec through gensim, LightGBM).
``None`` means the process default, in this order:

1. ``set_default_threads(n)`` (what ``recforge --threads N`` does);
2. the ``RECFORGE_THREADS`` environment variable;
3. ``auto_threads()``: the cores not already busy (``cpu_count - 1-minute load average``,
   rounded), at least 1 and at most ``AUTO_MAX``. On a machine running other work
   more threads than free cores make every parallel region wait for a core, and training
   gets several times slower instead of faster (docs/BENCHMARKS.md, "Threads under load").

Torch's intra-op thread count is process-wide. ``set_torch_threads(n)`` sets it at the
start of a fit; prediction never changes it (switching it per call races in a threaded
server); ``ensure_torch_threads()`` applies the default once per process before the first
prediction if no fit or caller has set it.

Reproducibility: a model whose parallel training is not deterministic (BPR's Hogwild SGD,
word2vec with several workers) asks ``reproducible_threads``: with a fixed seed and
``num_threads=None`` it trains on one thread; with a fixed seed and more threads asked for,
it warns once per model class that runs will differ.
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
import warnings

from recforge.exceptions import ConfigError

log = logging.getLogger(__name__)

ENV = "RECFORGE_THREADS"
AUTO_MAX = 8  # the auto default never takes more cores than this

_default: int | None = None
_torch_done = False
_lock = threading.Lock()
_warned: set[str] = set()


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def auto_threads() -> int:
    """Free cores now: ``cpu_count() - load average``, in [1, AUTO_MAX]."""
    cpus = cpu_count()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(AUTO_MAX, cpus, round(cpus - load)))


def check_threads(value: object, where: str = "num_threads") -> int | None:
    """``value`` as a thread count (None passes); anything else but a positive integer is a
    ConfigError naming ``where``."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():  # from an environment variable
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{where} must be a positive integer or None, got {value!r}.")
    return int(value)


def set_default_threads(n: int | None) -> None:
    """The process default for models whose ``num_threads`` is None (None: back to
    ``RECFORGE_THREADS`` / auto); torch picks it up at the next fit or prediction."""
    global _default, _torch_done
    _default = check_threads(n, "threads")
    _torch_done = False


def default_threads() -> int:
    """What ``num_threads=None`` means right now (see the module docstring)."""
    if _default is not None:
        return _default
    env = os.environ.get(ENV, "").strip()
    if env:
        return check_threads(env, ENV)  # type: ignore[return-value]
    return auto_threads()


def resolve_threads(num_threads: int | None) -> int:
    """A model's ``num_threads`` setting as a count: itself, or the default when None."""
    n = check_threads(num_threads)
    return default_threads() if n is None else n


def set_torch_threads(num_threads: int | None) -> int:
    """Set torch's process-wide intra-op threads to ``resolve_threads(num_threads)`` (a fit
    calls this once, at its start); returns the count."""
    global _torch_done
    import torch

    n = resolve_threads(num_threads)
    with _lock:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _torch_done = True
    log.debug("torch intra-op threads: %d", n)
    return n


def ensure_torch_threads() -> None:
    """Apply the default thread count to torch once per process, unless a fit already did
    (cheap after the first call; prediction paths call it)."""
    if not _torch_done:
        with _lock:
            if _torch_done:
                return
        set_torch_threads(None)


def reproducible_threads(num_threads: int | None, seed: int | None, owner: str) -> int:
    """Threads for a model whose multi-threaded training is not deterministic.

    seed None: ``resolve_threads(num_threads)``. A fixed seed and num_threads None: 1 (the
    seed then fixes the result). A fixed seed and num_threads > 1: that many, with a warning
    (once per ``owner``) that runs will differ.
    """
    n = check_threads(num_threads)
    if seed is None:
        return resolve_threads(n)
    if n is None:
        return 1
    if n > 1 and owner not in _warned:
        _warned.add(owner)
        warnings.warn(
            f"{owner}: training with num_threads={n} is not deterministic, so a fixed seed "
            f"does not fix the result; use num_threads=1 (or leave it None) for runs that "
            f"repeat exactly.",
            RuntimeWarning,
            stacklevel=3,
        )
    return n
