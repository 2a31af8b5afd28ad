"""Whether long work shows a progress bar.

``show_progress(setting)``: True/False as given; None (every model's default) means "only
where someone watches": stderr is an interactive terminal and no CI system is detected
(the ``CI`` environment variable). ``RECFORGE_PROGRESS=0`` / ``=1`` overrides the automatic
choice (not an explicit True/False).
"""

from __future__ import annotations

import os
import sys

ENV = "RECFORGE_PROGRESS"


def show_progress(setting: bool | None = None) -> bool:
    """Resolve a ``progress`` parameter (see the module docstring)."""
    if setting is not None:
        return bool(setting)
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
