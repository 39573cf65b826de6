"""Putting a run's metric series back to a checkpoint when the run resumes from it.

A learner that is killed has written metrics for steps after its last checkpoint; the
resumed learner writes those steps again, so they are deleted first (:func:`rewind`). The
other way round, a checkpoint written while Redis was unreachable (a killed driver takes
the embedded Redis with it before its learner stops) holds the entries that could not be
sent (``MetricsWriter.unsent``); :func:`resume_series` adds the ones the store lacks. Either
way every step is in the series once and in order.

    rewind(client, run_id, ckpt.step)                    # delete entries after the checkpoint
    resume_series(client, run_id, ckpt.state()["unsent_metrics"])
"""

from __future__ import annotations

import math
from typing import Any

import redis

from cluster.metrics import eval_key, train_key


def _step(fields: dict[str, Any]) -> float:
    try:
        return float(fields.get("step", "nan"))
    except (TypeError, ValueError):
        return math.nan


def rewind(client: redis.Redis, run_id: str, step: int) -> int:
    """Delete the run's train and eval entries of steps after ``step``. Returns how many."""
    deleted = 0
    for key in (train_key(run_id), eval_key(run_id)):
        while True:
            tail = client.xrevrange(key, count=500)
            late = [entry_id for entry_id, f in tail if _step(f) > step]
            if late:
                deleted += client.xdel(key, *late)
            if len(late) < len(tail) or not tail:
                break
    return deleted


def _steps_from(client: redis.Redis, key: str, first: float) -> set[float]:
    """Steps of ``key``'s entries from step ``first`` on (the stream is in step order)."""
    seen: set[float] = set()
    end = "+"
    while True:
        tail = client.xrevrange(key, max=end, count=500)
        seen.update(s for _, f in tail if (s := _step(f)) >= first)
        if len(tail) < 500 or _step(tail[-1][1]) < first:
            return seen
        end = "(" + tail[-1][0]


def resume_series(
    client: redis.Redis, run_id: str, step: int, unsent: list[dict[str, Any]] | None = None
) -> tuple[int, int]:
    """Rewind the series to ``step`` and add the checkpoint's ``unsent`` entries that are not
    in the store (a send can reach Redis and still fail for the sender). Returns (deleted,
    added); malformed entries are not added."""
    deleted = rewind(client, run_id, step)
    keys = {"train": train_key(run_id), "eval": eval_key(run_id)}
    entries = [
        (keys[e["stream"]], {str(k): str(v) for k, v in e["fields"].items()})
        for e in unsent or []
        if isinstance(e, dict)
        and e.get("stream") in keys
        and isinstance(e.get("fields"), dict)
        and _step(e["fields"]) <= step
    ]
    present = {
        key: _steps_from(client, key, min(_step(f) for k, f in entries if k == key))
        for key in {k for k, _ in entries}
    }
    pipe = client.pipeline(transaction=False)
    added = 0
    for key, fields in entries:
        if _step(fields) not in present[key]:
            pipe.xadd(key, fields)
            added += 1
    pipe.execute()
    return deleted, added
