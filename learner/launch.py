"""Assembling a run on Ray and taking it down again: metrics store, registry, queue, learner
actor, producers. The driver (``python -m learner``) only parses, shows progress and calls this.

    launch = Launch(cfg, run, resume=None, redis_url="")
    launch.open_metrics()                # embedded Redis or the URL; status "starting"
    info = launch.start(address=None)    # the learner first, then the producers
    ... ray.get(launch.actor.train.remote(100)) ...
    saved = launch.close(code=0)         # exit checkpoint, producers stopped, status written
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import ray
import redis

from cluster.config import RunConfig
from cluster.metrics import (
    EVENT_ERROR,
    EVENT_RESTART,
    EVENT_START,
    EVENT_STOP,
    NULL_METRICS,
    MetricsWriter,
    connect,
)
from cluster.queue import create_queue
from cluster.ray_session import init_ray, spare_cpus
from cluster.run_registry import create_registry
from cluster.runs import RunDir
from cluster.series_rewind import resume_series
from learner.actor import LearnerActor
from learner.checkpoint import Checkpoint, CheckpointManager
from workers.pool import start_producers, stop_producers
from workers.scaling import Autoscaler
from workers.watch import ProducerWatch

log = logging.getLogger(__name__)

# Any other exit code: "failed". 130: Ctrl-C (SIGINT), 143: SIGTERM.
STATUS_OF_EXIT = {0: "finished", 130: "interrupted", 143: "interrupted"}
EXIT_SAVE_PING_S = 15.0  # a learner that does not answer this fast gets no exit save


class LearnerNotStarted(RuntimeError):
    """The learner could not be placed or built in time; the message says what it needs."""


def learner_options(cfg: RunConfig) -> dict[str, Any]:
    """Ray resources for the learner: a GPU when asked or available, the `learner` node."""
    res = ray.cluster_resources()
    # Two threads: train() holds one; stop() ends a train() that waits for data (LearnerActor).
    opts: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_concurrency": 2}
    want_gpu = cfg.learner.device == "gpu" or (cfg.learner.device == "auto" and res.get("GPU"))
    if want_gpu:
        opts["num_gpus"] = 1
    if res.get("learner"):
        opts["resources"] = {"learner": 1}
    return opts


def learner_bundle(opts: dict[str, Any]) -> dict[str, float]:
    """The resources the learner's placement group holds for it, from its actor options."""
    bundle = {"CPU": float(opts.get("num_cpus", 1))}
    if opts.get("num_gpus"):
        bundle["GPU"] = float(opts["num_gpus"])
    bundle.update({k: float(v) for k, v in (opts.get("resources") or {}).items()})
    return bundle


class Launch:
    """One run's processes and stores, from start to a clean end."""

    def __init__(
        self, cfg: RunConfig, run: RunDir, resume: Checkpoint | None = None, redis_url: str = ""
    ) -> None:
        self.cfg, self.run, self.resume = cfg, run, resume
        # The URL the driver chose (--redis, REDIS_URL, metrics.redis_url as given, in that
        # order); it may hold a password, which cfg no longer does. Empty: embedded Redis.
        self.url = redis_url
        self.embedded = None  # EmbeddedRedis started for this run, if any
        self.writer: Any = NULL_METRICS
        self.actor = self.registry = self.queue = self.scaler = None
        self.group = None  # the placement group that keeps the learner's resources
        self.options: dict[str, Any] = {}  # the learner actor's options (learner_options)
        self.producers = 0
        self.restarts = 0
        self.watch = ProducerWatch()

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def open_metrics(self) -> None:
        """Start (or reuse) the run's embedded Redis unless a URL was given; say "starting"."""
        if not self.url:
            from cluster.redis_server import EmbeddedRedis

            self.embedded = EmbeddedRedis(self.run.store_dir(), self.cfg.metrics.redis_bind)
            self.url = self.embedded.ensure()
        cfg = self.cfg
        self.writer = MetricsWriter(self.url, self.run_id, "driver")
        self.writer.meta(
            config=json.dumps(cfg.to_dict()),
            started_at=time.time(),
            status="starting",
            preset=cfg.preset,
            data=cfg.data.path or "synthetic",
            max_steps=cfg.learner.max_steps,
            run_dir=str(self.run.path),
        )
        self.writer.event(EVENT_START, {"resume": str(self.resume.path) if self.resume else None})
        if self.resume is not None:
            self._rewind(self.resume)

    def _rewind(self, ckpt: Checkpoint) -> None:
        """Put the metric series back to ``ckpt`` (see ``cluster.series_rewind``)."""
        step, unsent = ckpt.step, ckpt.state().get("unsent_metrics")
        try:
            deleted, added = resume_series(connect(self.url), self.run_id, step, unsent)
        except redis.RedisError as exc:
            log.warning("could not rewind the metric series to step %d: %s", step, exc)
            return
        if deleted:
            log.info(
                "metrics: dropped %d entries written after the checkpoint at step %d", deleted, step
            )
        if added:
            log.info("metrics: added %d entries the checkpoint at step %d kept", added, step)

    def start(self, address: str | None = None, cpus: int | None = None) -> dict[str, Any]:
        """Connect to Ray and start the run's actors; returns the learner's ``info()``."""
        cfg, run_id = self.cfg, self.run_id
        init_ray(address, num_cpus=cpus, quiet=False)
        states = (self.resume.state().get("sampler_states") or {}) if self.resume else {}
        self.registry = create_registry(run_id, cfg.to_dict(), str(self.run.path), states, self.url)
        self.queue = create_queue(run_id, cfg.producer.queue_size)
        # The learner first: it holds its node (GPU, `learner` resource) before producers
        # could take that node's CPUs, in a placement group that keeps them for it: a
        # learner that dies is started again in the same reserved place, never behind a
        # producer that took its CPU meanwhile.
        self._reserve_learner()
        self.actor = self._learner(self.resume)
        info = self._started()  # placed and built: producers may fill the rest
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if self.embedded is not None and len(nodes) > 1 and self.embedded.host_is_loopback:
            log.warning(
                "the embedded Redis listens on %s only: producers on the other %d "
                "node(s) cannot send their metrics (training is not affected). Give "
                "--set metrics.redis_bind=0.0.0.0 (password-protected; firewall the port "
                "to the cluster) or --redis URL to see them on the dashboard.",
                self.embedded.bind,
                len(nodes) - 1,
            )
        self.producers = cfg.producer.count or spare_cpus(reserved=1)
        start_producers(cfg, run_id, self.producers, registry=self.registry, watch=self.watch)
        log.info(
            "learner: %s, %d parameters, %d producer(s)",
            info["device"],
            info["params"],
            self.producers,
        )
        self.writer.meta(
            status="running", device=info["device"], params=info["params"], producers=self.producers
        )
        self.scaler = Autoscaler(
            cfg, run_id, self.producers, self.registry, self.writer, watch=self.watch
        )
        return info

    def _reserve_learner(self) -> None:
        from ray.util.placement_group import placement_group

        self.options = learner_options(self.cfg)
        bundle = learner_bundle(self.options)
        self.group = placement_group([bundle], strategy="STRICT_PACK")
        timeout = self.cfg.learner.start_timeout
        ready, _ = ray.wait([self.group.ready()], timeout=timeout)
        if not ready:
            raise LearnerNotStarted(
                f"the cluster cannot place the learner ({bundle}) within {timeout:g} s: it has "
                f"{ray.available_resources()} free of {ray.cluster_resources()}; free a "
                "node's resources or add one (learner.start_timeout sets the wait)"
            )

    def _started(self) -> dict[str, Any]:
        """The learner's ``info()`` once it is built; a clear error when it is not in time."""
        timeout = self.cfg.learner.start_timeout
        try:
            return ray.get(self.actor.info.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise LearnerNotStarted(
                f"the learner was not running {timeout:g} s after it was started (placed "
                "but not built: see its log under the Ray session's logs)"
            ) from None

    def _learner(self, resume: Checkpoint | None) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cfg = self.cfg
        strategy = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=0)
        return (
            ray.remote(LearnerActor)
            .options(**self.options, scheduling_strategy=strategy)
            .remote(
                cfg.to_dict(),
                str(self.run.path),
                self.run_id,
                cfg.learner.device,
                str(resume.path) if resume else None,
                self.url,
            )
        )

    def restart_learner(self, why: str) -> dict[str, Any] | None:
        """A learner that died (killed, out of memory, its node gone) is started again from
        the run's last checkpoint, up to ``learner.max_restarts`` times; the producers and
        the queue carry on. Returns the new learner's ``info()``, or None when it may not."""
        ckpt = CheckpointManager(self.run.checkpoints).latest()
        if self.restarts >= self.cfg.learner.max_restarts or ckpt is None:
            return None
        self.restarts += 1
        log.warning(
            "the learner died (%s); restart %d of %d from %s",
            why,
            self.restarts,
            self.cfg.learner.max_restarts,
            ckpt.path.name,
        )
        with contextlib.suppress(Exception):
            ray.kill(self.actor, no_restart=True)
        self.writer.event(EVENT_RESTART, {"step": ckpt.step, "restart": self.restarts, "why": why})
        self.writer.flush()
        self._rewind(ckpt)
        self.actor = self._learner(ckpt)  # in the reserved place: it can always start
        return self._started()

    def call(self, ref: Any, poll: float = 1.0) -> Any:
        """``ray.get(ref)`` of a learner call, watching the producers meanwhile: raises
        :class:`ProducersFailed` when all of them have failed instead of waiting forever."""
        while True:
            ready, _ = ray.wait([ref], timeout=poll)
            self.check_store()
            if ready:
                return ray.get(ref)
            self.watch.check()

    def check_store(self) -> None:
        """The run's embedded Redis, started again on its port from its own data when it
        stopped (killed, out of memory): the learner and the producers keep their URL and
        send what they buffered meanwhile, so no step's metrics are lost and the run's
        status ends true. Said once per restart; a server that cannot start is said once."""
        server = self.embedded
        if server is None or server.proc is None or server.proc.poll() is None:
            return
        port = urlsplit(self.url).port
        log.warning(
            "the run's embedded Redis stopped (exit code %s); starting it again on port %d "
            "from its data in %s",
            server.proc.returncode,
            port,
            server.dir,
        )
        try:
            server.start(port=port)
        except RuntimeError as exc:  # the port taken meanwhile, a broken data folder
            server.proc = None  # said once; metrics stay buffered in the writers
            log.error("could not start the run's Redis again: %s", str(exc).splitlines()[0])
            return
        self.writer.event(EVENT_RESTART, {"store": "redis", "port": port})

    def final_save(self, timeout: float = 120) -> str | None:
        """The learner's exit checkpoint; None (with a warning) when it cannot be written.
        A ``train`` call still waiting for data is stopped first, so this never waits on it."""
        if self.actor is None:
            return None
        try:  # one that never started or hangs gets no exit save: the shutdown stays bounded
            ray.get(self.actor.info.remote(), timeout=EXIT_SAVE_PING_S)
        except Exception as exc:  # noqa: BLE001 - dead, unplaced or stuck: say which
            log.warning(
                "the learner does not answer (%s): no exit checkpoint; the periodic ones are kept",
                type(exc).__name__,
            )
            return None
        try:
            self.actor.stop.remote()
            return ray.get(self.actor.save.remote("exit"), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - report, the periodic checkpoints remain
            log.warning("could not write the exit checkpoint: %s", exc)
            return None

    def close(self, code: int, error: str | None = None) -> str | None:
        """Take the run down, writing an exit checkpoint first (the learner refuses one after
        its loss diverged). Returns the exit checkpoint's path, if one was written."""
        saved = None
        try:
            saved = self.final_save()
            if ray.is_initialized():
                if self.registry is not None:
                    stop_producers(self.run_id, timeout=5)
                    self.watch.settle()  # their loops' ends are ours: not "Task ... failed"
                self.queue = self.registry = self.actor = None
                if self.group is not None:  # a cluster outlives the driver: free its place
                    with contextlib.suppress(Exception):
                        ray.util.remove_placement_group(self.group)
                    self.group = None
                ray.shutdown()
        finally:
            self.check_store()  # the status is written even if the store stopped meanwhile
            status = STATUS_OF_EXIT.get(code, "failed")
            if error:
                self.writer.event(EVENT_ERROR, {"message": error, "exit_code": code})
            self.writer.event(EVENT_STOP, {"status": status})
            self.writer.meta(
                status=status, ended_at=time.time(), **({"error": error} if error else {})
            )
            self.writer.close()
            if self.embedded is not None:
                self.embedded.stop()
        return saved
