"""The learner's scalars as TensorBoard event files, beside the Redis streams.

``runs/<run-id>/tensorboard/events.out.tfevents.*``: ``tensorboard --logdir runs`` shows
every run. The metrics writer (:class:`cluster.metrics.MetricsWriter`) decides what is
logged and hands the same records to this sink from its background thread, so training
never waits on it. Bounded: train scalars every ``every`` steps (evaluations always), and
the file stops growing at ``max_bytes`` (said once). Written with TensorBoard's own
record framing and protos (the ``tensorboard`` package; no TensorFlow); when it is not
installed the run trains without event files and says so once.

    sink = TensorBoardSink.open(run.tensorboard)               # None without tensorboard
    sink.scalars(120, {"train/loss": 0.08, "train/lr": 1e-3})
    sink.close()
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from cluster.metric_schema import scalars, tensorboard_tag, wait_share

log = logging.getLogger(__name__)


class TensorBoardSink:
    def __init__(self, logdir: Path, every: int = 10, max_bytes: int = 64 << 20) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.every, self.max_bytes = max(1, every), max_bytes
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = logdir / name
        self._fh = open(self.path, "wb")  # noqa: SIM115 - kept open for the run, closed in close()
        self._records = RecordWriter(self._fh)
        self.written = 0
        self.full = False
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    @classmethod
    def open(cls, logdir: Path, every: int = 10, max_bytes: int = 64 << 20) -> Any:
        """A sink, or None (said once) when TensorBoard is not installed or the folder
        cannot be written: the run trains either way."""
        try:
            return cls(logdir, every, max_bytes)
        except ImportError:
            log.info("tensorboard is not installed: no event files (pip install tensorboard)")
        except OSError as exc:
            log.warning("cannot write TensorBoard events in %s (%s): none written", logdir, exc)
        return None

    def _write(self, event: Any) -> None:
        data = event.SerializeToString()
        if self.written + len(data) + 16 > self.max_bytes:
            if not self.full:
                self.full = True
                log.warning(
                    "TensorBoard events reached %d MB in %s: no more are written for this run "
                    "(the dashboard's Redis streams go on)",
                    self.max_bytes >> 20,
                    self.path,
                )
            return
        self._records.write(data)
        self.written += len(data) + 16  # the record's length, two checksums

    def scalars(self, step: int, values: dict[str, float]) -> None:
        summary = self._summary(
            value=[self._summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()]
        )
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def resumed_at(self, step: int) -> None:
        """The run goes on after the checkpoint of ``step``: a session start at ``step + 1``,
        so TensorBoard drops what earlier files hold past the checkpoint (what a killed run
        wrote after it; TensorBoard purges from the start's step on), as the Redis series
        is rewound, and keeps the checkpoint's own step."""
        from tensorboard.compat.proto import event_pb2

        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(self._event(wall_time=time.time(), step=int(step) + 1, session_log=start))

    def flush(self) -> None:
        """Write out what is buffered; an OSError when the event file was removed (the
        writes would go on into a deleted file, lost without a word)."""
        self._fh.flush()
        if os.fstat(self._fh.fileno()).st_nlink == 0:
            raise OSError(f"{self.path} was removed (its folder deleted or cleaned up)")

    def close(self) -> None:
        self._fh.close()


def train_scalars(record: dict[str, Any]) -> dict[str, float]:
    """What TensorBoard shows of a step: the loss and its parts, the learning rate, the
    similarities and their gap, and the timings with the share spent waiting for data."""
    out = _tagged("train", TRAIN_SCALARS, record)
    if record.get("cos_ap") is not None and record.get("cos_an") is not None:
        out["train/gap"] = record["cos_ap"] - record["cos_an"]
    if (record.get("wait_s") or 0.0) + (record.get("step_s") or 0.0) > 0:
        out["train/wait_pct"] = 100.0 * wait_share(record.get("wait_s"), record.get("step_s"))
    return out


def eval_scalars(result: dict[str, Any]) -> dict[str, float]:
    return _tagged("eval", EVAL_SCALARS, result)


def _tagged(stream: str, names: tuple[str, ...], record: dict[str, Any]) -> dict[str, float]:
    """``record``'s values of ``names`` under their TensorBoard tags (shares as percent)."""
    out = {}
    for k in names:
        if record.get(k) is not None:
            tag, scale = tensorboard_tag(stream, k)
            out[tag] = scale * record[k]
    return out


# Derived from the one declaration (cluster.metric_schema).
TRAIN_SCALARS = scalars("train")
EVAL_SCALARS = scalars("eval")
