"""Reading metrics from Redis for the dashboard: which runs exist, and their series, incrementally.

Two ways to find runs:

- ``UrlSource``: one Redis server (``REDIS_URL`` / ``--redis``), runs listed in ``ve:runs``;
- ``RunsDirSource``: a ``runs/`` folder; each run keeps an embedded store under
  ``runs/<id>/redis``, whose server is started on the persisted data when none runs.

    source = RunsDirSource("runs")
    series = RunSeries("20261124-073721-3f9a")
    series.refresh(source.client_for(series.run_id))   # new entries since the last read

``RunSeries`` keeps what it has read of one run and asks Redis only for stream
entries after the last id it saw, so a refresh costs the new points, not the
whole history. Drawing reduces the series (``dashboard.series``); this module only reads.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from cluster import metrics as M
from cluster.redaction import public_url
from cluster.runs import RunDir, is_run_id

log = logging.getLogger(__name__)
READ_CHUNK = 20_000


class StoreUnavailable(RuntimeError):
    """Redis cannot be reached; the message says where."""


class UrlSource:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = M.connect(url)

    def describe(self) -> str:
        return f"Redis at {public_url(self.url)}"

    def runs(self) -> list[dict[str, Any]]:
        try:
            ids = self.client.zrevrange(M.RUNS, 0, 199)
            pipe = self.client.pipeline()
            for rid in ids:
                pipe.hgetall(M.meta_key(rid))
            metas = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis at {public_url(self.url)}: {exc}") from None
        return [{"id": rid, **meta} for rid, meta in zip(ids, metas, strict=True)]

    def client_for(self, run_id: str) -> redis.Redis:
        if not isinstance(run_id, str) or not is_run_id(run_id):
            raise StoreUnavailable(f"{run_id!r} is not a run id")
        return self.client

    def forget(self, run_id: str) -> None:
        """Nothing to redo: the client reconnects to the one server by itself."""


class RunsDirSource:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._servers: dict[str, Any] = {}
        self._clients: dict[str, redis.Redis] = {}

    def describe(self) -> str:
        return f"run directories under {self.root.resolve()}"

    def runs(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir(), key=lambda p: p.name, reverse=True):
            if not RunDir(d).config_file.exists() or not is_run_id(d.name):
                continue
            meta: dict[str, Any] = {
                "id": d.name,
                "status": "stored",
                "started_at": str(d.stat().st_mtime),
            }
            client = self._clients.get(d.name)
            if client is not None:
                try:
                    meta.update(client.hgetall(M.meta_key(d.name)))
                except redis.RedisError:
                    pass
            out.append(meta)
        return out

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run listed under the root; anything else (a path, ``..``, a folder
        that is not a run) is refused, so a page request can never start a server elsewhere."""
        if not isinstance(run_id, str) or not is_run_id(run_id):
            raise StoreUnavailable(f"{run_id!r} is not a run id")
        folder = self.root / run_id
        if (
            folder.resolve().parent != self.root.resolve()
            or not RunDir(folder).config_file.is_file()
        ):
            raise StoreUnavailable(f"no run {run_id!r} under {self.root}")
        return folder

    def client_for(self, run_id: str) -> redis.Redis:
        if run_id not in self._clients:
            from cluster.redis_server import EmbeddedRedis

            try:
                server = EmbeddedRedis(RunDir(self.run_dir(run_id)).store_dir())
                url = server.ensure()
            except (RuntimeError, OSError, ValueError) as exc:
                raise StoreUnavailable(f"cannot start the store of run {run_id}: {exc}") from None
            self._servers[run_id] = server
            self._clients[run_id] = M.connect(url)
        return self._clients[run_id]

    def forget(self, run_id: str) -> None:
        """A read failed: find (or start) the run's server again on the next refresh."""
        client = self._clients.pop(run_id, None)
        self._servers.pop(run_id, None)
        if client is not None:
            client.close()


@dataclass
class Stream:
    """One Redis stream read incrementally into growable float64 columns (or raw rows)."""

    key: str
    last_id: str = "0-0"
    keep_rows: bool = False
    rows: list[dict[str, str]] = field(default_factory=list)  # for non-numeric streams
    n: int = 0
    _cols: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {k: v[: self.n] for k, v in self._cols.items()}

    def _append(self, name: str, values: np.ndarray) -> None:
        col = self._cols.get(name)
        if col is None:  # a new field: NaN for the entries before it
            col = self._cols[name] = np.full(max(16, 2 * (self.n + len(values))), np.nan)
        if len(col) < self.n + len(values):  # grow by doubling: appends stay amortised O(1)
            bigger = np.full(2 * (self.n + len(values)), np.nan)
            bigger[: len(col)] = col
            col = self._cols[name] = bigger
        col[self.n : self.n + len(values)] = values

    def read(self, client: redis.Redis) -> int:
        """Append entries newer than ``last_id``; returns how many arrived."""
        got = 0
        while True:
            entries = client.xrange(self.key, min=f"({self.last_id}", max="+", count=READ_CHUNK)
            if entries and self.keep_rows:
                self.rows.extend(fields for _, fields in entries)
            elif entries:
                names = set(self._cols).union(*(fields.keys() for _, fields in entries))
                for name in names:
                    raw = [fields.get(name, "nan") for _, fields in entries]
                    try:
                        values = np.array(raw).astype(np.float64)
                    except ValueError:
                        values = np.array([_float(v) for v in raw])
                    self._append(name, values)
                self.n += len(entries)
            if entries:
                self.last_id = entries[-1][0]
                got += len(entries)
            if len(entries) < READ_CHUNK:
                self._rewound()
                return got

    def _rewound(self) -> None:
        """A resumed learner writes the steps after its checkpoint again (the driver deletes
        the killed run's copies): drop copies already read, so steps stay in order, once."""
        steps = self._cols.get("step")
        if steps is None or self.n < 2:
            return
        st = steps[: self.n]
        drops = np.nonzero(st[1:] <= st[:-1])[0]
        if not len(drops):
            return
        keep = np.ones(self.n, bool)
        for d in drops:  # entries before a restart at step s keep only steps below s
            keep[: d + 1] &= st[: d + 1] < st[d + 1]
        for col in self._cols.values():
            kept = col[: self.n][keep]
            col[: len(kept)] = kept
            col[len(kept) : self.n] = np.nan
        self.n = int(keep.sum())

    def array(self, name: str) -> np.ndarray:
        col = self._cols.get(name)
        return col[: self.n] if col is not None else np.full(self.n, np.nan)


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")


class RunSeries:
    """Everything read so far of one run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.train = Stream(M.train_key(run_id))
        self.eval = Stream(M.eval_key(run_id))
        self.producers = Stream(M.producers_key(run_id))
        self.events = Stream(M.events_key(run_id), keep_rows=True)
        self.meta: dict[str, str] = {}
        self.read_at = 0.0

    def refresh(self, client: redis.Redis) -> int:
        try:
            n = sum(s.read(client) for s in (self.train, self.eval, self.producers, self.events))
            self.meta = client.hgetall(M.meta_key(self.run_id))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"cannot read run {self.run_id}: {exc}") from None
        self.read_at = time.time()
        return n

    def steps(self) -> int:
        return self.train.n

    def checkpoints(self) -> list[int]:
        out = []
        for row in self.events.rows:
            if row.get("kind") == M.EVENT_CHECKPOINT:
                try:
                    out.append(int(json.loads(row.get("data", "{}"))["step"]))
                except (ValueError, KeyError):
                    pass
        return out
