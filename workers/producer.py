"""The producer: a plain class that builds triplet batches and puts them on a queue.

``BatchProducer`` knows nothing of Ray; the driver (or ``python -m workers``)
makes it a restartable actor with :func:`producer_actor`. It loops until
stopped, blocking on a full queue (backpressure), and reports its build time
and throughput through ``stats()`` and, when given one, a metrics writer.

    producer = BatchProducer(cfg, worker_id=0, queue=q, wrap=Envelope.wrap)
    producer.run()            # until producer.stop() or the queue goes away
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Full as StdFull
from typing import Any

import numpy as np
import ray.exceptions
from ray.util.queue import Full as RayFull

from cluster.config import RunConfig
from workers.cache import FeatureSource, FeatureStore, cache_dir_for
from workers.corpus import SpeakerDatabase
from workers.sampler import BatchBuilder, TripletSampler

log = logging.getLogger(__name__)


def resolve_corpus(cfg: RunConfig) -> Path:
    """The corpus root: ``data.path``, or the synthetic corpus generated into the cache."""
    if cfg.data.path:
        return Path(cfg.data.path).expanduser()
    from workers.synthetic import ensure_corpus

    return ensure_corpus(cfg.synthetic, cfg.data.cache_dir)


def open_database(cfg: RunConfig) -> tuple[SpeakerDatabase, list[str], list[str]]:
    """Scan the corpus and split it: ``(db, train_speakers, eval_speakers)``."""
    db = SpeakerDatabase.scan(
        resolve_corpus(cfg), cfg.data.layout, cfg.data.min_seconds, cfg.data.cache_dir
    )
    train, held = db.split(cfg.data.eval_fraction, cfg.data.split_seed, cfg.data.min_eval_speakers)
    return db, train, held


def producer_seed(base: int, worker_id: int) -> int:
    """Independent, reproducible streams per worker (SeedSequence mixes both)."""
    return int(np.random.SeedSequence([base, worker_id]).generate_state(1)[0])


class BatchProducer:
    def __init__(
        self,
        cfg: RunConfig,
        worker_id: int,
        queue: Any,
        wrap: Callable[[Any], Any] | None = None,
        metrics: Any = None,
        db: SpeakerDatabase | None = None,
    ) -> None:
        """``queue`` needs ``put(item, timeout=...)`` raising ``queue.Full`` when full;
        ``wrap`` turns a Batch into what is enqueued (``Envelope.wrap`` under Ray)."""
        self.cfg, self.worker_id, self.queue = cfg, worker_id, queue
        self.wrap = wrap or (lambda batch: batch)
        self.metrics = metrics
        if db is None:
            db, train, _ = open_database(cfg)
        else:
            train, _ = db.split(
                cfg.data.eval_fraction, cfg.data.split_seed, cfg.data.min_eval_speakers
            )
        self.db = db
        mode = cfg.data.feature_cache
        store = (
            None
            if mode == "off"
            else FeatureStore(cache_dir_for(db, cfg.features, cfg.data.cache_dir))
        )
        self.source = FeatureSource(
            db,
            cfg.features,
            store,
            write_cache=mode == "readwrite",
            memory_bytes=0 if mode == "off" else 256 << 20,
        )
        self.sampler = TripletSampler(
            db, train, cfg.sampler.triplets, producer_seed(cfg.sampler.seed, worker_id)
        )
        self.builder = BatchBuilder(
            self.sampler, self.source, cfg.sampler.frames, cfg.features.dtype, worker_id
        )
        self._stop = threading.Event()
        self.built = 0
        self.build_seconds = 0.0
        self.blocked_seconds = 0.0
        self.started = time.time()
        self.queue_gone = False
        self._put_since: float | None = None
        log.info("producer %d ready: %s, %d training speakers", worker_id, db.summary(), len(train))

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
                    self.queue.put(item, timeout=self.cfg.producer.put_timeout)
                    return True
                except (StdFull, RayFull):
                    continue
                except ray.exceptions.ActorUnavailableError:
                    time.sleep(self.cfg.producer.put_timeout)  # restarting: try again
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
            if self.metrics is not None:
                self.metrics.producer(
                    self.worker_id,
                    batch.build_seconds,
                    self.built,
                    self.stats()["batches_per_second"],
                )
        return self.stats()
