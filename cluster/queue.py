"""The run's named, bounded batch queue, and the stream the learner reads it through.

Producers ``ray.put`` a :class:`~cluster.batch.Batch` and enqueue an
:class:`Envelope` holding only its ObjectRef, so the queue actor never copies
feature arrays. ``maxsize`` is the backpressure: a full queue blocks producers.

    queue = create_queue(run_id, maxsize=16)          # the driver
    queue = attach_queue(run_id)                      # anyone else in the cluster
    queue.put(Envelope.wrap(batch), timeout=1.0)      # producers
    for batch in BatchStream(queue, prefetch=4): ...  # the learner
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.queue import Empty, Full, Queue

from cluster.batch import Batch
from cluster.ray_session import NAMESPACE, on_this_node

log = logging.getLogger(__name__)

__all__ = [
    "Empty",
    "Full",
    "Envelope",
    "BatchStream",
    "DataTimeout",
    "create_queue",
    "attach_queue",
    "queue_name",
]


def queue_name(run_id: str) -> str:
    return f"batches-{run_id}"


@dataclass(frozen=True)
class Envelope:
    """What travels through the queue: a reference and a few numbers, never arrays."""

    ref: Any  # ray.ObjectRef[Batch]
    worker_id: int
    seq: int
    created_at: float
    build_seconds: float
    nbytes: int

    @classmethod
    def wrap(cls, batch: Batch) -> Envelope:
        return cls(
            ray.put(batch),
            batch.worker_id,
            batch.seq,
            batch.created_at,
            batch.build_seconds,
            batch.nbytes,
        )


def create_queue(run_id: str, maxsize: int, num_cpus: float = 0) -> Queue:
    """Create the run's queue as a named actor other drivers can find by run id."""
    if maxsize <= 0:
        raise ValueError("the batch queue must be bounded (maxsize > 0)")
    return Queue(
        maxsize=maxsize,
        actor_options={
            "name": queue_name(run_id),
            "namespace": NAMESPACE,
            "num_cpus": num_cpus,
            # A queue restarted by Ray would be empty but usable: producers and learner go on.
            "max_restarts": -1,
            "max_task_retries": 0,
            "scheduling_strategy": on_this_node(),
        },
    )


def attach_queue(run_id: str) -> Queue:
    """The queue of a running run, from any driver connected to the same cluster."""
    try:
        actor = ray.get_actor(queue_name(run_id), namespace=NAMESPACE)
    except ValueError:
        raise LookupError(
            f"no running run {run_id!r} in this Ray cluster (no actor {queue_name(run_id)!r}); "
            "is the driver (python -m learner) running and connected to the same cluster?"
        ) from None
    return RayQueueInternals.of_actor(actor)


class RayQueueInternals:
    """The one place that reaches inside ``ray.util.queue.Queue`` (Ray 2.x): its ``actor``
    and ``maxsize`` fields, and the actor's ``get(timeout)``, ``qsize()`` and ``maxsize``.
    The public API has no constructor for an existing actor and no non-blocking ``get``
    that returns an ObjectRef, which the prefetching stream needs. If a Ray upgrade
    changes these, ``tests/integration/test_ray_pipeline.py::
    test_the_ray_queue_internals_we_use_are_still_there`` fails and names the piece."""

    @staticmethod
    def of_actor(actor: Any) -> Queue:
        """A ``Queue`` for an existing queue actor (found by name)."""
        queue = Queue.__new__(Queue)
        queue.actor = actor
        queue.maxsize = ray.get(actor.__ray_call__.remote(lambda self: self.maxsize))
        return queue

    @staticmethod
    def get_ref(queue: Queue) -> ray.ObjectRef:
        """A request for the next item (blocking inside the actor until there is one)."""
        return queue.actor.get.remote(None)

    @staticmethod
    def size_ref(queue: Queue) -> ray.ObjectRef:
        """A request for the number of items waiting."""
        return queue.actor.qsize.remote()


class DataTimeout(TimeoutError):
    """No batch arrived within the stream's timeout: the producers are gone or stuck."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no batch arrived for {waited:.0f} s")
        self.waited = waited


@dataclass
class StreamStats:
    batches: int = 0
    wait_seconds: float = 0.0  # time next() spent blocked on data
    lost: int = 0  # envelopes whose batch was gone (its producer died)
    last_wait: float = 0.0
    last_build_seconds: float = 0.0
    per_worker: dict[int, int] = field(default_factory=dict)


class BatchStream(Iterator[Batch]):
    """Iterate batches from a queue, keeping ``prefetch`` requests in flight.

    In-flight requests are bounded, so the data held for the learner is at most
    ``queue.maxsize + prefetch`` batches. ``stop()`` ends iteration.
    """

    def __init__(
        self, queue: Queue, prefetch: int = 4, poll: float = 0.5, timeout: float = 0.0
    ) -> None:
        self.queue = queue
        self.prefetch = max(1, prefetch)
        self.poll = poll
        self.timeout = timeout  # seconds one next() may wait for data (0: forever)
        self.stats = StreamStats()
        self._pending: deque = deque()
        self._stopped = False
        self._depth_ref = None
        self._depth = 0

    def depth(self) -> int:
        """Batches waiting in the queue, refreshed in the background (never blocks)."""
        if self._depth_ref is not None:
            ready, _ = ray.wait([self._depth_ref], timeout=0)
            if not ready:
                return self._depth
            try:
                self._depth = ray.get(self._depth_ref)
            except ray.exceptions.RayError:
                pass
        self._depth_ref = RayQueueInternals.size_ref(self.queue)
        return self._depth

    def stop(self) -> None:
        self._stopped = True

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        start = time.perf_counter()
        try:
            while True:
                if self._stopped:
                    raise StopIteration
                if self.timeout and time.perf_counter() - start > self.timeout:
                    raise DataTimeout(time.perf_counter() - start)
                while len(self._pending) < self.prefetch:
                    self._pending.append(RayQueueInternals.get_ref(self.queue))
                ready, _ = ray.wait([self._pending[0]], timeout=self.poll)
                if not ready:
                    continue
                try:
                    envelope = ray.get(self._pending.popleft())
                except ray.exceptions.ActorUnavailableError:
                    time.sleep(self.poll)  # the queue actor is restarting; ask again
                    continue
                try:
                    batch = ray.get(envelope.ref)
                except (ray.exceptions.OwnerDiedError, ray.exceptions.ObjectLostError):
                    # Its producer died before we read it; the next one will do.
                    self.stats.lost += 1
                    log.warning(
                        "batch %s/%s was lost with its producer; skipping",
                        envelope.worker_id,
                        envelope.seq,
                    )
                    continue
                self.stats.batches += 1
                self.stats.last_build_seconds = envelope.build_seconds
                w = envelope.worker_id
                self.stats.per_worker[w] = self.stats.per_worker.get(w, 0) + 1
                return batch
        finally:
            waited = time.perf_counter() - start
            self.stats.last_wait = waited
            self.stats.wait_seconds += waited
