"""The model directory: what ``save`` writes and ``load`` (and later the server) reads.

A model directory holds::

    manifest.json        name, kind, format version, created, params, data schema,
                         metrics, library versions, and a sha256 of every other file
    weights.safetensors  every array (NumPy), no pickle
    state.json           JSON state: vocabularies, encoders, anything not an array

Loading checks the format version and each file's checksum and fails with an
``ArtifactError`` that names the file on anything missing or corrupt.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recforge.exceptions import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
STATE = "state.json"


@dataclass
class Artifact:
    """What a model directory holds, read back."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of recforge and the libraries whose formats matter."""
    import recforge

    out = {
        "recforge": recforge.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    from contextlib import suppress
    from importlib.metadata import PackageNotFoundError, version

    with suppress(PackageNotFoundError):  # metadata only: importing torch costs seconds
        out["torch"] = version("torch")
    return out


def write_artifact(
    path: str | Path,
    *,
    name: str,
    kind: str,
    params: dict[str, Any],
    arrays: dict[str, np.ndarray],
    state: dict[str, Any],
    schema: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory (created if missing; existing files are replaced)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clean = {}
    for key, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype == object:
            raise ArtifactError(f"array {key!r} has dtype object; store it in state.json instead.")
        clean[key] = a
    save_file(clean, str(path / WEIGHTS))
    (path / STATE).write_text(json.dumps(state, default=_json_default))
    manifest = {
        "name": name,
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "params": params,
        "schema": schema or {},
        "metrics": metrics or {},
        "versions": versions(),
        "files": {f: _sha256(path / f) for f in (WEIGHTS, STATE)},
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a model directory, checked for format version."""
    path = Path(path)
    mfile = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a model directory (it does not exist or is a file).")
    if not mfile.exists():
        raise ArtifactError(f"{mfile}: missing; {path} is not a recforge model directory.")
    try:
        manifest = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mfile}: corrupt JSON ({e}).") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mfile}: expected a JSON object, got {type(manifest).__name__}.")
    for key in ("name", "kind", "format_version", "files"):
        if key not in manifest:
            raise ArtifactError(f"{mfile}: field {key!r} is missing.")
    if not isinstance(manifest["format_version"], int) or not isinstance(manifest["files"], dict):
        raise ArtifactError(f"{mfile}: 'format_version' must be an integer and 'files' an object.")
    if manifest["format_version"] > FORMAT_VERSION:
        raise ArtifactError(
            f"{mfile}: format version {manifest['format_version']} is newer than this "
            f"recforge understands ({FORMAT_VERSION}); upgrade recforge."
        )
    return manifest


def read_artifact(path: str | Path) -> Artifact:
    """Read and verify a model directory."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    manifest = read_manifest(path)
    for fname, digest in manifest["files"].items():
        f = path / fname
        if not f.exists():
            raise ArtifactError(f"{f}: missing from the model directory.")
        if _sha256(f) != digest:
            raise ArtifactError(f"{f}: checksum mismatch; the file is corrupt or was edited.")
    try:
        arrays = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path / WEIGHTS}: cannot be read ({e}).") from None
    try:
        state = json.loads((path / STATE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path / STATE}: corrupt JSON ({e}).") from None
    return Artifact(manifest, arrays, state, path)


def pack_sparse(prefix: str, m: sp.spmatrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays under ``prefix.*``."""
    m = sp.csr_matrix(m)
    return {
        f"{prefix}.data": m.data,
        f"{prefix}.indices": m.indices.astype(np.int64),
        f"{prefix}.indptr": m.indptr.astype(np.int64),
        f"{prefix}.shape": np.asarray(m.shape, dtype=np.int64),
    }


def unpack_sparse(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of ``pack_sparse``."""
    try:
        shape = tuple(int(x) for x in arrays[f"{prefix}.shape"])
        return sp.csr_matrix(
            (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]),
            shape=shape,
        )
    except KeyError as e:
        raise ArtifactError(f"sparse matrix {prefix!r} is incomplete: {e} missing.") from None


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot store {type(x).__name__} in JSON")
