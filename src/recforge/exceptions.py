"""Errors that say what went wrong and what would fix it."""

from __future__ import annotations


class RecforgeError(Exception):
    """Base class of every error recforge raises on purpose."""


class NotFittedError(RecforgeError, AttributeError):
    """A method that needs learned state was called before ``fit``."""

    def __init__(self, obj: object, method: str = "this method") -> None:
        name = type(obj).__name__
        super().__init__(f"{name} is not fitted yet: call {name}.fit(...) before {method}.")


class ConfigError(RecforgeError, ValueError):
    """A configuration or parameter is wrong (unknown key, bad type, bad value)."""


class DataError(RecforgeError, ValueError):
    """Input data is malformed. Names the file, line and column where known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: str | int | None = None,
    ) -> None:
        self.path, self.line, self.column = path, line, column
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UnknownIdError(RecforgeError, KeyError):
    """Raw ids that the model never saw in training."""

    def __init__(self, kind: str, ids: list, hint: str | None = None) -> None:
        shown = ", ".join(repr(i) for i in ids[:10])
        more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
        self.ids = ids
        why = (
            f"{hint[0].upper()}{hint[1:]}."
            if hint
            else "They were not in the training data; filter them out or use a recall "
            "pipeline with a popularity fallback."
        )
        super().__init__(f"{len(ids)} unknown {kind} id(s): {shown}{more}. {why}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ArtifactError(RecforgeError, OSError):
    """A saved model directory is missing, incomplete or corrupt."""


class TrainingError(RecforgeError, RuntimeError):
    """Training diverged (NaN/inf loss) or cannot continue (unusable checkpoint)."""
