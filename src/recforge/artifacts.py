"""The model directory: what ``save`` writes and ``load`` (and later the server) reads.

A model directory holds::

    manifest.json        name, kind, format version, created, params, data schema,
                         metrics, library versions, and a sha256 of every other file
    weights.safetensors  every array (NumPy), no pickle
    state.json           JSON state: vocabularies, encoders, anything not an array

Reading it (``read_artifact``, or ``verify_artifact`` which checks without loading the
arrays) always requires both data files and their checksums, whatever ``manifest["files"]``
lists; names there must be plain relative paths inside the directory (no absolute path,
no ``..``, no link out of it). Anything missing, corrupt or edited is an ``ArtifactError``
that names the file.

Saving is atomic: ``atomic_dir`` writes a temporary directory beside the target and renames
it into place, so a reader sees the old directory or the new one, never half of one; an
existing target is replaced only if it is empty or holds what the same writer makes (a
``manifest.json`` here). ``verify_files`` and ``atomic_dir`` are shared with the Faiss index
and recall pipeline directories.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.sparse as sp

from recforge.exceptions import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
STATE = "state.json"
REQUIRED_FILES = (WEIGHTS, STATE)  # checked on every read, listed in "files" or not
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Artifact:
    """What a model directory holds, read back."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]
    path: Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksums(path: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of files inside directory ``path`` (for a manifest's "files")."""
    return {n: sha256_file(Path(path) / n) for n in names}


def safe_name(name: Any, *, what: str, where: str | Path) -> str:
    """``name`` if it is a plain relative path (POSIX separators, no ``..``, not absolute,
    no backslash or NUL); else an ``ArtifactError`` naming ``where``."""
    ok = isinstance(name, str) and name not in ("", ".") and "\\" not in name and "\0" not in name
    if ok:
        p = PurePosixPath(name)
        ok = not p.is_absolute() and ".." not in p.parts and not re.match(r"^[A-Za-z]:", name)
    if not ok:
        raise ArtifactError(
            f"{where}: {what} {name!r} is not a safe relative file name (absolute paths, "
            f"'..' and backslashes are refused); the file was edited or is not from recforge."
        )
    return name


def verify_files(
    path: str | Path,
    files: Any,
    *,
    required: Iterable[str],
    where: str | Path,
    hashed_later: Iterable[str] = (),
) -> None:
    """Check a manifest's ``files`` map (``{name: sha256}``) against directory ``path``.

    Every name in ``required`` must be listed; every listed name must be safe (see
    ``safe_name``), resolve inside ``path``, exist and match its checksum. ``where`` (the
    manifest file) goes into the error message. ``hashed_later``: names whose content the
    caller's loader checks against another manifest pinned by this one (a bundle's parts),
    so that a load hashes every byte once; they are still checked for all the rest.
    """
    hashed_later = set(hashed_later)
    path = Path(path)
    if not isinstance(files, dict):
        raise ArtifactError(f"{where}: 'files' must be an object of {{name: sha256}}.")
    for name in required:
        if name not in files:
            raise ArtifactError(
                f"{where}: no checksum for {name!r} under 'files'; every recforge writer "
                f"records one, so the manifest was edited. Save the model again."
            )
    root = path.resolve()
    for name, digest in files.items():
        safe_name(name, what="file name", where=where)
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ArtifactError(f"{where}: checksum of {name!r} is not a sha256 hex digest.")
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"{f}: missing from {path}.")
        if not f.resolve().is_relative_to(root):
            raise ArtifactError(f"{f}: is a link that points outside {path}; refused.")
        if name not in hashed_later and sha256_file(f) != digest:
            raise ArtifactError(f"{f}: checksum mismatch; the file is corrupt or was edited.")


@contextmanager
def atomic_dir(path: str | Path, *, replaces: Iterable[str] = (MANIFEST,)) -> Iterator[Path]:
    """Write a directory atomically: yields a fresh temporary directory beside ``path``;
    when the block ends without error its files are synced and it is renamed to ``path``.

    An existing ``path`` is replaced only when it is an empty directory or holds one of
    ``replaces`` (what this writer makes, e.g. ``manifest.json``), so a wrong path never
    deletes unrelated files; the old directory is moved aside first and restored if the
    swap fails. On error the temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    replaces = tuple(replaces)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise ArtifactError(f"{path}: exists and is not a directory; choose another path.")
        if any(path.iterdir()) and not any((path / m).exists() for m in replaces):
            raise ArtifactError(
                f"{path}: exists and is not a directory this writer made (no "
                f"{' or '.join(replaces)}); refusing to replace it. Choose another path."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        _sync_tree(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{tag}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _sync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (so a rename never exposes unwritten
    data after a crash)."""
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            fd = os.open(os.path.join(dirpath, n), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(dirpath))


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    """Write a model directory atomically (``atomic_dir``: an existing model directory at
    ``path`` is replaced whole, anything else there is refused); returns ``path``."""
    from safetensors.numpy import save_file

    path = Path(path)
    clean = {}
    for key, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype == object:
            raise ArtifactError(f"array {key!r} has dtype object; store it in state.json instead.")
        clean[key] = a
    state_text = json.dumps(state, default=_json_default)
    manifest = {
        "name": name,
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "params": params,
        "schema": schema or {},
        "metrics": metrics or {},
        "versions": versions(),
    }
    with atomic_dir(path, replaces=(MANIFEST,)) as tmp:
        save_file(clean, str(tmp / WEIGHTS))
        (tmp / STATE).write_text(state_text)
        manifest["files"] = checksums(tmp, REQUIRED_FILES)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    return path


def read_json(path: Path, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON object from ``path``; an ``ArtifactError`` naming the file if it is missing,
    not JSON, or not an object."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: corrupt JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected {what}, got {type(data).__name__}.")
    return data


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a model directory, checked for fields, format version and safe
    file names (not for checksums: see ``verify_artifact``)."""
    path = Path(path)
    mfile = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a model directory (it does not exist or is a file).")
    if not mfile.exists():
        raise ArtifactError(f"{mfile}: missing; {path} is not a recforge model directory.")
    manifest = read_json(mfile)
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
    if not isinstance(manifest.get("params", {}), dict):
        raise ArtifactError(f"{mfile}: 'params' must be an object.")
    for fname in manifest["files"]:
        safe_name(fname, what="file name", where=mfile)
    return manifest


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check a model directory fully without building the model; returns its manifest.

    Checks the manifest (fields, format version, safe names), that ``weights.safetensors``
    and ``state.json`` are listed and match their sha256 (as does any other listed file),
    that the weights parse as safetensors and the state as a JSON object. Raises
    ``ArtifactError`` naming the file on the first problem. ``read_artifact`` runs the same
    checks, so a directory that passes loads unless its content does not fit the model's
    code (also an ``ArtifactError``, from ``BaseModel.load``).
    """
    manifest, _state = _verified(Path(path))
    return manifest


def _verified(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    manifest = read_manifest(path)
    verify_files(path, manifest["files"], required=REQUIRED_FILES, where=path / MANIFEST)
    try:
        with safe_open(str(path / WEIGHTS), framework="numpy") as f:
            list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path / WEIGHTS}: cannot be read ({e}).") from None
    state = read_json(path / STATE, "a JSON object (the model's state)")
    return manifest, state


def read_artifact(path: str | Path) -> Artifact:
    """Read and verify a model directory (``verify_artifact``'s checks, then the arrays)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    manifest, state = _verified(path)
    try:
        arrays = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path / WEIGHTS}: cannot be read ({e}).") from None
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
