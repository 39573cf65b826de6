"""The cache in shards: many utterances' arrays per file, for corpora of a million files.

A shard is two files under ``<store>/shards/``: ``<name>.bin``, the arrays' raw bytes one
after another, and ``<name>.json``, its index (``{key: [offset, dtype, shape]}`` for an
array, ``{key: {"rejected": reason}}`` for an unusable file), keyed with the store's own
content key (:meth:`workers.cache.FeatureStore.key`), so a file that changed gets a new key
and is not found. The bytes are written and fsynced first, the index renamed into place
last: a shard exists once its index does, a writer killed before leaves only ``.tmp``
files, removed by the next writer. ``workers.precompute --shards N`` writes them; every
reader (:class:`ShardIndex`) keeps one sorted array of keys and maps a shard when it
first reads from it, so random access costs a binary search and a page fault.

    write_shard(root, "00001", [(key, array), (key2, "no_speech")])
    index = ShardIndex.open(root)          # every shard's index, None when there are none
    index.get(key)                         # a read-only array view, or None
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

from cluster.files import atomic_write, atomic_write_text

SHARDS = "shards"
MAX_MAPPED = 64  # shards kept mapped per reader


def write_shard(root: Path, name: str, entries: list[tuple[str, np.ndarray | str]]) -> Path:
    """One shard of ``entries`` (key, array or rejection reason); returns its index path."""
    folder = Path(root) / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{name}.*.tmp"):  # a killed writer's (atomic_write's names)
        stale.unlink(missing_ok=True)
    index: dict[str, object] = {}

    def arrays(fh) -> None:
        for key, value in entries:
            if isinstance(value, str):
                index[key] = {"rejected": value}
                continue
            array = np.ascontiguousarray(value)
            index[key] = [fh.tell(), array.dtype.str, list(array.shape)]
            fh.write(array.tobytes())

    atomic_write(folder / f"{name}.bin", arrays)
    atomic_write_text(folder / f"{name}.json", json.dumps(index))  # last: the shard exists
    return folder / f"{name}.json"


class ShardIndex:
    """Every shard of a store: one sorted key array, and where each entry lies, in columns
    (about 70 bytes an entry: a million entries cost 70 MB, not an object each)."""

    def __init__(
        self,
        folder: Path,
        names: list[str],
        columns: dict[str, np.ndarray],
        dtypes: list[str],
        reasons: list[str],
    ) -> None:
        self.folder, self.names, self.dtypes, self.reasons = folder, names, dtypes, reasons
        order = np.argsort(columns["key"], kind="stable")
        self.cols = {k: v[order] for k, v in columns.items()}
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()

    @classmethod
    def open(cls, root: Path) -> ShardIndex | None:
        folder = Path(root) / SHARDS
        if not folder.is_dir():
            return None
        names: list[str] = []
        dtypes: list[str] = []
        reasons: list[str] = []
        rows: dict[str, list] = {
            k: [] for k in ("key", "shard", "offset", "dtype", "dim0", "dim1", "reason")
        }
        for path in sorted(folder.glob("*.json")):
            try:
                index = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged index: its entries are extracted again
            number = len(names)
            names.append(path.stem)
            for key, where in index.items():
                rows["key"].append(key.encode())
                rows["shard"].append(number)
                if isinstance(where, dict):  # rejected
                    reason = str(where.get("rejected", "rejected"))
                    if reason not in reasons:
                        reasons.append(reason)
                    rows["reason"].append(reasons.index(reason))
                    rows["offset"].append(0), rows["dtype"].append(0)
                    rows["dim0"].append(0), rows["dim1"].append(-1)
                    continue
                offset, dtype, shape = where
                if dtype not in dtypes:
                    dtypes.append(dtype)
                rows["reason"].append(-1)
                rows["offset"].append(offset)
                rows["dtype"].append(dtypes.index(dtype))
                rows["dim0"].append(shape[0])
                rows["dim1"].append(shape[1] if len(shape) > 1 else -1)
        if not names:
            return None
        columns = {
            "key": np.array(rows["key"], dtype="S40"),
            "shard": np.array(rows["shard"], np.int32),
            "offset": np.array(rows["offset"], np.int64),
            "dtype": np.array(rows["dtype"], np.int8),
            "dim0": np.array(rows["dim0"], np.int64),
            "dim1": np.array(rows["dim1"], np.int32),
            "reason": np.array(rows["reason"], np.int16),
        }
        return cls(folder, names, columns, dtypes, reasons)

    def __len__(self) -> int:
        return len(self.cols["key"])

    def _row(self, key: str) -> int | None:
        keys, k = self.cols["key"], key.encode()
        i = int(np.searchsorted(keys, k))
        return i if i < len(keys) and keys[i] == k else None

    def status(self, key: str) -> str | None:
        i = self._row(key)
        if i is None:
            return None
        return "rejected" if self.cols["reason"][i] >= 0 else "done"

    def rejection(self, key: str) -> str:
        i = self._row(key)
        return self.reasons[self.cols["reason"][i]] if i is not None else ""

    def get(self, key: str) -> np.ndarray | None:
        """The entry's array, a read-only view into its mapped shard; None if absent."""
        i = self._row(key)
        if i is None or self.cols["reason"][i] >= 0:
            return None
        c = self.cols
        shape = (int(c["dim0"][i]),) if c["dim1"][i] < 0 else (int(c["dim0"][i]), int(c["dim1"][i]))
        data = self._mapped(int(c["shard"][i]))
        dtype = np.dtype(self.dtypes[c["dtype"][i]])
        return np.frombuffer(data, dtype, int(np.prod(shape)), int(c["offset"][i])).reshape(shape)

    def _mapped(self, number: int) -> np.memmap:
        data = self._maps.get(number)
        if data is None:
            path = self.folder / f"{self.names[number]}.bin"
            data = self._maps[number] = np.memmap(path, np.uint8, mode="r")
            while len(self._maps) > MAX_MAPPED:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(number)
        return data
