"""Where producers become Ray actors: started by the driver or attached later by ``python -m workers``.

handles = start_producers(cfg, run_id, count=2)          # reserve ids, create, run
stop_producers(run_id, count=1)                          # the newest ones go first
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import ray

from cluster.config import RunConfig, config_from_dict
from cluster.metrics import EVENT_QUARANTINED, MetricsWriter
from cluster.queue import Envelope, attach_queue
from cluster.ray_session import NAMESPACE
from cluster.run_registry import attach_registry, quarantined_of
from workers.producer import BatchProducer

log = logging.getLogger(__name__)


def producer_name(run_id: str, worker_id: int) -> str:
    return f"producer-{run_id}-{worker_id}"


class ProducerActor:
    """A BatchProducer that finds its run's queue, registry and metrics store by run id, so
    Ray can restart it on any node. A plain class; :func:`start_producers` makes it remote."""

    def __init__(
        self, config: dict[str, Any], run_id: str, worker_id: int, detached: bool = False
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        cfg = config_from_dict(config)
        self.run_id, self.detached = run_id, detached
        registry = attach_registry(run_id)
        url = ray.get(registry.metrics_url.remote())
        # 0 the first time; a restart by Ray (killed, out of memory) gets a fresh stream
        # instead of sending the run's first batches again.
        start = ray.get(registry.count_start.remote(worker_id))
        self.producer = BatchProducer.from_config(
            cfg,
            worker_id,
            attach_queue(run_id),
            wrap=Envelope.wrap,
            metrics=MetricsWriter.from_config(cfg.metrics, run_id, f"producer-{worker_id}", url),
            start=start,
            guard=DecodeGuard(registry, worker_id),
        )
        saved = ray.get(registry.take_sampler_state.remote(worker_id))
        if saved:  # a resumed run: continue this worker's stream where the learner left it
            self.producer.sampler.set_state(json.loads(saved))
        elif start:
            log.info("producer %d restarted (start %d): a fresh sample stream", worker_id, start)
        if start:
            self._report_strikes(registry)

    def _report_strikes(self, registry: Any) -> None:
        strikes = ray.get(registry.strikes.remote())
        quarantined = quarantined_of(strikes)
        for key, n in sorted(strikes.items()):
            state = "quarantined for this run" if key in quarantined else "watched"
            log.warning("%s was being decoded when a producer died (%d time(s)): %s", key, n, state)
        if quarantined:
            self.producer.metrics.event(EVENT_QUARANTINED, {"files": quarantined})

    def run(self, max_batches: int | None = None) -> dict[str, Any]:
        stats = self.producer.run(max_batches)
        if self.detached and self.producer.queue_gone:
            ray.actor.exit_actor()  # the run ended: a detached producer must not linger
        return stats

    def stop(self) -> None:
        self.producer.stop()

    def stats(self) -> dict[str, Any]:
        return self.producer.stats()


class DecodeGuard:
    """Tells the run's registry which file this producer is decoding, so a file that kills
    its producer (out of memory, a crashing decoder) is blamed on the restart and skipped
    once it has done so twice. One round trip per decoded file; cache hits cost nothing."""

    def __init__(self, registry: Any, worker_id: int) -> None:
        self.registry, self.worker_id = registry, worker_id

    def begin(self, key: str) -> bool:
        """False when ``key`` is quarantined."""
        return ray.get(self.registry.decoding.remote(self.worker_id, key))

    def end(self) -> None:
        self.registry.decoded.remote(self.worker_id)  # ordered after begin: no need to wait


def start_producers(
    cfg: RunConfig,
    run_id: str,
    count: int,
    detached: bool = False,
    registry: Any = None,
    watch: Any = None,
) -> list[Any]:
    """Create ``count`` producer actors for a run and start their loops; a ``watch``
    (:class:`workers.watch.ProducerWatch`) is handed each loop to look after."""
    registry = registry or attach_registry(run_id)
    ids = ray.get(registry.reserve_worker_ids.remote(count))
    base_options = dict(
        num_cpus=cfg.producer.num_cpus,
        # Restart a killed producer and re-issue its run() loop on the new instance.
        max_restarts=-1,
        max_task_retries=-1,
        max_concurrency=2,  # run() occupies one thread; stop()/stats() use the other
        scheduling_strategy="SPREAD",
        namespace=NAMESPACE,
    )
    actor_cls = ray.remote(ProducerActor)
    handles = []
    for wid in ids:
        name = producer_name(run_id, wid)
        opts: dict[str, Any] = dict(base_options, name=name)
        if detached:
            opts["lifetime"] = "detached"
        handle = actor_cls.options(**opts).remote(cfg.to_dict(), run_id, wid, detached)
        loop = handle.run.remote()
        if watch is not None:
            watch.add(wid, handle, loop)
        registry.register_producer.remote(wid, name)
        handles.append(handle)
    log.info("started producers %s for run %s", ids, run_id)
    return handles


def stop_producers(run_id: str, count: int | None = None, timeout: float = 10.0) -> list[int]:
    """Stop ``count`` producers of a run (the newest first; all if None); returns their ids."""
    registry = attach_registry(run_id)
    producers = ray.get(registry.producers.remote())
    ids = sorted(producers, reverse=True)[: count if count is not None else len(producers)]
    for wid in ids:
        try:
            handle = ray.get_actor(producers[wid], namespace=NAMESPACE)
        except ValueError:
            registry.unregister_producer.remote(wid)
            continue
        # A dead or stuck producer is killed below anyway.
        with contextlib.suppress(Exception):
            ray.get(handle.stop.remote(), timeout=timeout)
        ray.kill(handle, no_restart=True)
        ray.get(registry.unregister_producer.remote(wid))
    return ids
