"""Metric names and the one writer every process uses to send them to Redis.

Schema (also in docs/metrics.md); ``{run}`` is the run id:

=========================  ======  ===========================================================
key                        type    content
=========================  ======  ===========================================================
``ve:runs``                zset    run ids scored by start time
``ve:run:{run}:meta``      hash    config (JSON), started_at, status, updated_at, dropped, ...
``ve:run:{run}:train``     stream  one entry per step: TRAIN_FIELDS
``ve:run:{run}:eval``      stream  one entry per evaluation: EVAL_FIELDS
``ve:run:{run}:producers`` stream  one entry per batch built: PRODUCER_FIELDS
``ve:run:{run}:events``    stream  ``kind`` + ``data`` (JSON): checkpoint, collapse, scale, ...
=========================  ======  ===========================================================

Values are numbers (as Redis strings) or JSON, never pickles. Streams are
capped (``MAXLEN ~ stream_maxlen``). Writes are non-blocking: calls append to a
bounded in-memory buffer that a background thread sends in pipelined batches;
if Redis is unreachable the writer warns once, keeps buffering, and sends the
buffer when Redis is back. Entries pushed out of a full buffer are counted in
``meta.dropped``, not silently lost.

    writer = MetricsWriter(url, run_id, source="learner")
    writer.train({"step": 1, "loss": 0.1, ...})
    writer.close()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any

import redis

from cluster.metric_schema import fields
from cluster.redaction import public_url
from cluster.tensorboard import TensorBoardSink, eval_scalars, train_scalars

log = logging.getLogger(__name__)

RUNS = "ve:runs"
# The fields of each stream, derived from the one declaration (cluster.metric_schema).
TRAIN_FIELDS = fields("train")
EVAL_FIELDS = fields("eval")
PRODUCER_FIELDS = fields("producers")
# Event kinds (the ``kind`` of an ``events`` entry); ``data`` is a JSON object.
EVENT_START = "start"  # {"resume": checkpoint path or null}
EVENT_STOP = "stop"  # {"status": finished | interrupted | failed}
EVENT_ERROR = "error"  # {"message", "exit_code"}
EVENT_RESTART = "restart"  # {"step", "restart", "why"}: the learner restarted
EVENT_CHECKPOINT = "checkpoint"  # {"step", "reason", "bytes", "path"}
EVENT_AVERAGE = "average"  # {"path", "from", ...the averaged model's evaluation}
EVENT_COLLAPSE = "collapse"  # {"step"}: every embedding alike
EVENT_SCALE = "scale"  # {"wait_share", "requested_producers", "started", "producers"}
EVENT_QUARANTINED = "quarantined"  # {"files"}: files that killed their producer twice


def meta_key(run: str) -> str:
    return f"ve:run:{run}:meta"


def train_key(run: str) -> str:
    return f"ve:run:{run}:train"


def eval_key(run: str) -> str:
    return f"ve:run:{run}:eval"


def producers_key(run: str) -> str:
    return f"ve:run:{run}:producers"


def events_key(run: str) -> str:
    return f"ve:run:{run}:events"


def connect(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast (training must never hang on metrics)."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def _num(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(value)


class MetricsWriter:
    def __init__(
        self,
        url: str,
        run_id: str,
        source: str = "",
        maxlen: int = 100_000,
        buffer: int = 10_000,
        flush_interval: float = 0.5,
        client: redis.Redis | None = None,
        tensorboard: Any = None,
    ) -> None:
        """``tensorboard``: a :class:`cluster.tensorboard.TensorBoardSink` that gets the
        same train and eval records, written from the background thread."""
        self.url, self.run_id, self.source = url, run_id, source
        self.tensorboard = tensorboard
        # (step, scalars) to write, or (step, None): the run resumed after that step.
        self._tb: deque[tuple[int, dict[str, float] | None]] = deque(maxlen=buffer)
        self.maxlen, self.flush_interval = maxlen, flush_interval
        self._client = client
        self._buf: deque[tuple[int, str, dict[str, str]]] = deque()  # (seq, key, fields)
        self._seq = 0
        self._bound = buffer
        self._lock = threading.Lock()  # guards the buffer
        self._send_lock = threading.Lock()  # one flush at a time: an entry is sent once
        self.dropped = 0
        self._reported_drops = 0
        self.sent = 0
        self.connected = True
        self._warned = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(
        cls, cfg, run_id: str, source: str, url: str | None = None, tensorboard_dir: Any = None
    ) -> MetricsWriter | NullMetrics:
        """A writer to ``url`` (else ``cfg.redis_url``); with neither, one that drops everything.
        ``tensorboard_dir``: also write TensorBoard events there (``metrics.tensorboard``)."""
        url = url or cfg.redis_url
        if not url:
            return NULL_METRICS
        sink = None
        if tensorboard_dir is not None and cfg.tensorboard:
            sink = TensorBoardSink.open(
                tensorboard_dir, cfg.tensorboard_every, int(cfg.tensorboard_max_mb * 2**20)
            )
        return cls(url, run_id, source, cfg.stream_maxlen, cfg.buffer, tensorboard=sink)

    # -- producers of metrics (non-blocking) -------------------------------------------------
    def _push(self, key: str, fields: dict[str, Any]) -> None:
        fields = {k: _num(v) for k, v in fields.items() if v is not None}
        with self._lock:
            self._seq += 1
            entry = (self._seq, key, fields)
            if len(self._buf) >= self._bound:
                self._buf.popleft()
                self.dropped += 1
            self._buf.append(entry)

    def train(self, record: dict[str, Any]) -> None:
        fields = {k: record[k] for k in TRAIN_FIELDS if record.get(k) is not None}
        self._push(train_key(self.run_id), fields)
        tb = self.tensorboard
        if tb is not None and record.get("step") is not None and record["step"] % tb.every == 0:
            self._tb.append((int(record["step"]), train_scalars(record)))

    def eval(self, step: int, result: dict[str, Any]) -> None:
        fields = {k: result[k] for k in EVAL_FIELDS if result.get(k) is not None}
        self._push(eval_key(self.run_id), {**fields, "step": step})
        if self.tensorboard is not None:
            self._tb.append((step, eval_scalars(result)))

    def producer(self, worker: int, build_s: float, built: int, batches_per_s: float) -> None:
        values = (worker, build_s, built, batches_per_s)
        self._push(producers_key(self.run_id), dict(zip(PRODUCER_FIELDS, values, strict=True)))

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self._push(
            events_key(self.run_id),
            {"kind": kind, "source": self.source, "time": time.time(), "data": json.dumps(data)},
        )

    def meta(self, **fields: Any) -> None:
        """Set run metadata now (used at start and end of a run; blocking, best effort)."""
        mapping = {k: _num(v) for k, v in fields.items()}
        mapping["updated_at"] = _num(time.time())
        try:
            client = self._connect()
            pipe = client.pipeline()
            pipe.hset(meta_key(self.run_id), mapping=mapping)
            if "started_at" in fields:
                pipe.zadd(RUNS, {self.run_id: float(fields["started_at"])})
            pipe.execute()
        except redis.RedisError as exc:
            self._unreachable(exc)

    def unsent(self) -> list[dict[str, Any]]:
        """The train and eval entries still buffered, oldest first, as ``{"stream", "fields"}``:
        what a checkpoint written while Redis is unreachable carries (``cluster.series_rewind``)."""
        streams = {train_key(self.run_id): "train", eval_key(self.run_id): "eval"}
        with self._lock:
            return [
                {"stream": streams[key], "fields": dict(fields)}
                for _, key, fields in self._buf
                if key in streams
            ]

    # -- sending -----------------------------------------------------------------------------
    def _connect(self) -> redis.Redis:
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    def _unreachable(self, exc: Exception) -> None:
        self.connected = False
        if not self._warned:
            self._warned = True
            log.warning(
                "metrics: Redis at %s is unreachable (%s); training goes on and metrics "
                "are buffered (up to %d entries) until it is back",
                public_url(self.url),
                exc,
                self._bound,
            )

    def flush(self) -> bool:
        """Send what is buffered; True when the buffer was emptied. Safe to call from any
        thread (the learner flushes at each checkpoint): one send at a time."""
        with self._send_lock:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            batch = list(self._buf)
        if not batch and self.dropped == self._reported_drops:
            return True
        try:
            client = self._connect()
            pipe = client.pipeline(transaction=False)
            for _, key, fields in batch:
                pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
            if self.dropped != self._reported_drops:
                pipe.hset(meta_key(self.run_id), "dropped", self.dropped)
            pipe.execute()
        except redis.RedisError as exc:
            self._unreachable(exc)
            return False
        with self._lock:
            # New entries may have arrived (and old ones been dropped) while we sent.
            last = batch[-1][0] if batch else 0
            while self._buf and self._buf[0][0] <= last:
                self._buf.popleft()
            self._reported_drops = self.dropped
        self.sent += len(batch)
        if not self.connected:
            log.info("metrics: Redis is back; sent %d buffered entries", len(batch))
            self.connected, self._warned = True, False
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()
            self._write_tensorboard()

    def resumed_at(self, step: int) -> None:
        """A resumed learner starts at ``step``: TensorBoard forgets what came after it."""
        if self.tensorboard is not None:
            self._tb.append((step, None))

    def _write_tensorboard(self) -> None:
        """Drain the TensorBoard queue (bounded: the oldest go first when it is full)."""
        if self.tensorboard is None:
            return
        try:
            while self._tb:
                step, values = self._tb.popleft()
                if values is None:
                    self.tensorboard.resumed_at(step)
                elif values:
                    self.tensorboard.scalars(step, values)
            self.tensorboard.flush()
        except OSError as exc:  # a full disk, a deleted folder: the run goes on without them
            log.warning(
                "TensorBoard events stopped (%s); the Redis series and the dashboard go on",
                exc,
            )
            self.tensorboard = None

    def close(self, timeout: float = 5.0) -> None:
        """Send what is left (within ``timeout``) and stop the background thread."""
        deadline = time.time() + timeout
        while self._buf and time.time() < deadline and not self.flush():
            time.sleep(0.2)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2)
        self._write_tensorboard()
        if self.tensorboard is not None:
            self.tensorboard.close()


class NullMetrics:
    """The writer of a process without a metrics store: every call is accepted and dropped,
    so callers never check whether they have a writer."""

    def resumed_at(self, step: int) -> None:
        pass

    def train(self, record: dict[str, Any]) -> None:
        pass

    def eval(self, step: int, result: dict[str, Any]) -> None:
        pass

    def producer(self, worker: int, build_s: float, built: int, batches_per_s: float) -> None:
        pass

    def event(self, kind: str, data: dict[str, Any]) -> None:
        pass

    def meta(self, **fields: Any) -> None:
        pass

    def flush(self) -> bool:
        return True

    def unsent(self) -> list[dict[str, Any]]:
        return []

    def close(self, timeout: float = 5.0) -> None:
        pass


NULL_METRICS = NullMetrics()
