"""Id vocabularies: raw ids (any hashable: int, str) <-> dense internal indices.

Users never see internal indices; models keep an ``IdVocab`` for users and one for items and
translate at the edges. Indices run 0..n-1 in first-seen order (no reserved slots); feature
encoders that need a padding/out-of-vocabulary slot add it themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from recforge.exceptions import DataError, UnknownIdError


class IdVocab:
    """A bijection between raw ids and 0..n-1.

    >>> v = IdVocab(["a", "b", "c"]); v.index(["c", "a"]).tolist(); v.ids([1]).tolist()
    [2, 0]
    ['b']
    """

    def __init__(self, ids: Iterable[Any], kind: str = "item") -> None:
        self.kind = kind
        values = pd.unique(
            pd.Series(list(ids) if not isinstance(ids, pd.Series | np.ndarray) else ids)
        )
        self._ids = np.asarray(values)
        self._index = pd.Index(self._ids)
        if self._index.hasnans:
            raise DataError(
                f"{kind} ids contain a missing value (NaN/None); drop or fill it first."
            )

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw_id: Any) -> bool:
        return raw_id in self._index

    def __repr__(self) -> str:
        return f"IdVocab(kind={self.kind!r}, size={len(self)})"

    @property
    def raw_ids(self) -> np.ndarray:
        """All raw ids, position i holds the id of index i."""
        return self._ids

    def index(self, raw_ids: Iterable[Any], unknown: str = "raise") -> np.ndarray:
        """Internal indices (int64) of ``raw_ids``.

        unknown: "raise" raises UnknownIdError; "mask" returns -1 for unknown ids.
        """
        arr = raw_ids if isinstance(raw_ids, np.ndarray | pd.Series | pd.Index) else list(raw_ids)
        idx = self._index.get_indexer(arr).astype(np.int64)
        if unknown == "raise" and (idx < 0).any():
            bad = list(pd.unique(np.asarray(arr, dtype=object)[idx < 0]))
            raise UnknownIdError(self.kind, bad, hint=self._type_hint(bad))
        return idx

    def _type_hint(self, bad: list[Any]) -> str | None:
        """Why ids were not found when their type differs from this vocabulary's ("196"
        asked of integer ids), else None."""
        if not len(self._ids):
            return None
        mine = _id_type(self._ids[0])
        theirs = {_id_type(b) for b in bad}
        if theirs == {mine} or mine is None:
            return None
        sample = self._ids[0]
        given = ", ".join(sorted(t for t in theirs if t))
        return (
            f"the {self.kind} ids of this model are {mine} (e.g. {_py(sample)!r}) but "
            f"{given} were given; pass them as {mine}"
        )

    def get(self, raw_id: Any, default: int = -1) -> int:
        """The index of one raw id, or ``default``: a dict lookup (built on first use), for
        the one-id-at-a-time online path where ``index`` would cost a pandas call."""
        pos = self.__dict__.get("_pos")
        if pos is None:
            pos = self._pos = {x: i for i, x in enumerate(self._ids.tolist())}
        try:
            return pos.get(raw_id, default)
        except TypeError:  # unhashable
            return default

    def get_many(self, raw_ids: Iterable[Any]) -> np.ndarray:
        """``get`` for a short list: (n,) int64, -1 for unknown ids."""
        return np.fromiter((self.get(x) for x in raw_ids), dtype=np.int64)

    def ids(self, indices: np.ndarray | Iterable[int]) -> np.ndarray:
        """Raw ids of internal ``indices`` (same shape)."""
        return self._ids[np.asarray(indices, dtype=np.int64)]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form; raw ids keep int vs str."""
        return {"kind": self.kind, "ids": [_py(x) for x in self._ids]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdVocab:
        return cls(data["ids"], kind=data.get("kind", "item"))


def _id_type(x: Any) -> str | None:
    """ "integers" / "strings" for an id, None for anything else."""
    if isinstance(x, bool | np.bool_):
        return None
    if isinstance(x, int | np.integer):
        return "integers"
    if isinstance(x, str | np.str_):
        return "strings"
    return None


def _py(x: Any) -> Any:
    """NumPy scalar -> Python scalar for JSON."""
    return x.item() if isinstance(x, np.generic) else x
