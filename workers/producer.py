"""The producer: a plain class that builds triplet batches and puts them on a queue.

``BatchProducer`` knows nothing of Ray or of how the corpus was opened: it is
handed its sampler and feature source (``from_config`` wires them from a run's
config through :class:`~workers.rundata.RunData`). ``workers.pool`` makes it a
restartable actor. It loops until stopped, blocking on a full queue
(backpressure), and reports its build time and throughput through ``stats()``
and its metrics writer.

    producer = BatchProducer.from_config(cfg, worker_id=0, queue=q, wrap=Envelope.wrap)
    producer.run()            # until producer.stop() or the queue goes away
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from queue import Full as StdFull
from typing import Any

import numpy as np
import ray.exceptions
from ray.util.queue import Full as RayFull

from cluster.config import FeatureConfig, ProducerConfig, RunConfig
from cluster.metrics import NULL_METRICS
from workers.audio import AudioError
from workers.augment import Augmenter
from workers.batches import BatchBuilder
from workers.cache import CachedSource
from workers.rundata import RunData
from workers.sampler import TripletSampler

log = logging.getLogger(__name__)


def babble_of(source: CachedSource, data: RunData) -> Callable[[Any], Any]:
    """Speech of a random training utterance (float32), for babble noise; None if unusable."""
    utts = data.training_utterances()

    def babble(rng: np.random.Generator) -> np.ndarray | None:
        try:
            return source.get(utts[int(rng.integers(len(utts)))]).astype(np.float32) / 32768
        except AudioError:
            return None

    return babble


def producer_seed(base: int, worker_id: int, start: int = 0) -> int:
    """Independent, reproducible streams per worker and per (re)start of that worker
    (SeedSequence mixes all three): a producer restarted by Ray never replays its stream."""
    return int(np.random.SeedSequence([base, worker_id, start]).generate_state(1)[0])


class BatchProducer:
    def __init__(
        self,
        worker_id: int,
        sampler: TripletSampler,
        source: CachedSource,
        queue: Any,
        frames: int,
        features: FeatureConfig,
        cfg: ProducerConfig | None = None,
        wrap: Callable[[Any], Any] | None = None,
        metrics: Any = NULL_METRICS,
        augmenter: Augmenter | None = None,
    ) -> None:
        """``queue`` needs ``put(item, timeout=...)`` raising ``queue.Full`` when full;
        ``wrap`` turns a Batch into what is enqueued (``Envelope.wrap`` under Ray)."""
        self.worker_id, self.queue = worker_id, queue
        self.cfg = cfg or ProducerConfig()
        self.wrap = wrap or (lambda batch: batch)
        self.metrics = metrics
        self.sampler, self.source = sampler, source
        self.builder = BatchBuilder(sampler, source, frames, features, worker_id, augmenter)
        self._stop = threading.Event()
        self.built = 0
        self.build_seconds = 0.0
        self.blocked_seconds = 0.0
        self.started = time.time()
        self.queue_gone = False
        self._put_since: float | None = None

    @classmethod
    def from_config(
        cls,
        cfg: RunConfig,
        worker_id: int,
        queue: Any,
        wrap: Callable[[Any], Any] | None = None,
        metrics: Any = NULL_METRICS,
        data: RunData | None = None,
        start: int = 0,
        guard: Any = None,
    ) -> BatchProducer:
        """A producer of the run ``cfg`` describes, on its training speakers; ``start``
        counts how often this worker id was started before (its stream depends on it);
        ``guard`` (a :class:`~cluster.run_registry.DecodeGuard`) is told which file the
        producer decodes, so a file that kills it is blamed."""
        data = data or RunData.open(cfg.data, cfg.synthetic)
        sampler = TripletSampler(
            data.db,
            data.train,
            cfg.sampler.triplets,
            producer_seed(cfg.sampler.seed, worker_id, start),
            cfg.sampler.weighting,
        )
        log.info(
            "producer %d ready: %s, %d training speakers%s",
            worker_id,
            data.db.summary(),
            len(data.train),
            ", augmenting" if cfg.augment.enabled else "",
        )
        if not cfg.augment.enabled:
            source, augmenter = data.source(cfg.features, guard=guard), None
        else:
            source = data.waves(cfg.features, guard=guard)
            augmenter = Augmenter(
                cfg.augment, cfg.features, babble_of(source, data), cfg.data.cache_dir
            )
        return cls(
            worker_id,
            sampler,
            source,
            queue,
            cfg.sampler.frames,
            cfg.features,
            cfg.producer,
            wrap,
            metrics,
            augmenter,
        )

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-9)
        return {
            "worker_id": self.worker_id,
            "built": self.built,
            "build_seconds": self.build_seconds,
            "mean_build_seconds": self.build_seconds / max(self.built, 1),
            # Time spent waiting on a full queue, including a wait still going on.
            "blocked_seconds": self.blocked_seconds
            + (time.perf_counter() - since if (since := self._put_since) else 0.0),
            "batches_per_second": self.built / elapsed,
            "rejected": dict(self.builder.rejected),
            "cache_computed": self.source.computed,
        }

    def _put(self, item: Any) -> bool:
        """Put, waiting while the queue is full; False if stopped first."""
        t0 = self._put_since = time.perf_counter()
        try:
            while not self._stop.is_set():
                try:
                    self.queue.put(item, timeout=self.cfg.put_timeout)
                    return True
                except (StdFull, RayFull):
                    continue
                except ray.exceptions.ActorUnavailableError:
                    time.sleep(self.cfg.put_timeout)  # restarting: try again
                    continue
            return False
        finally:
            self._put_since = None
            self.blocked_seconds += time.perf_counter() - t0

    def run(self, max_batches: int | None = None) -> dict[str, Any]:
        """Build and enqueue until stopped, ``max_batches`` reached or the queue is gone."""
        self._stop.clear()
        goal = None if max_batches is None else self.built + max_batches
        while not self._stop.is_set() and (goal is None or self.built < goal):
            batch = self.builder.build()
            self.build_seconds += batch.build_seconds
            try:
                if not self._put(self.wrap(batch)):
                    break
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
                log.info("producer %d: the run's queue is gone; stopping", self.worker_id)
                self.queue_gone = True
                break
            self.built += 1
            self.metrics.producer(
                self.worker_id, batch.build_seconds, self.built, self.stats()["batches_per_second"]
            )
        return self.stats()
