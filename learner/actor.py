"""The learner as a Ray actor: builds its collaborators, then trains from the run's queue.

``LearnerActor`` is a plain class; the driver applies ``ray.remote`` with the
resources it needs (one GPU when the cluster has one).

    learner = build_learner(cfg, "runs/x", device="cpu")      # the plain Learner, for tests
    actor = ray.remote(num_gpus=1)(LearnerActor).remote(cfg.to_dict(), "runs/x", "x")
    summary = ray.get(actor.train.remote(500))                  # then .finish(), .save()
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import ray

from cluster.config import config_from_dict
from cluster.metrics import NULL_METRICS, MetricsWriter
from cluster.queue import BatchStream, DataTimeout, attach_queue
from cluster.ray_session import NAMESPACE
from cluster.run_registry import attach_registry
from cluster.runs import RunDir
from learner.checkpoint import Checkpoint, resolve
from learner.heldout import Cohort, HeldOutEval
from learner.learner import Learner
from learner.train_step import resolve_device, use_mixed_precision
from workers.augment import SPEEDS
from workers.rundata import RunData

log = logging.getLogger(__name__)


def speed_copies(cfg) -> int:
    """How many versions of each speaker batches carry (speed perturbation makes three)."""
    return len(SPEEDS) if cfg.augment.enabled and cfg.augment.speed_prob else 1


def build_learner(
    cfg,
    run_dir: str | Path | None,
    device: str = "auto",
    metrics: Any = NULL_METRICS,
    queue_depth: Any = None,
) -> Learner:
    """A Learner with the held-out evaluation of the run's corpus; ``queue_depth``: a
    callable giving the batches waiting (recorded with each step)."""
    device = resolve_device(device)
    data = RunData.open(cfg.data, cfg.synthetic)
    held = data.held
    evaluator = None
    if held:
        sub, source = data.held_out(cfg.features)
        evaluator = HeldOutEval(
            sub,
            source,
            cfg.sampler.frames,
            cfg.learner.eval_trials,
            seed=cfg.learner.seed,
            bootstrap=cfg.learner.eval_bootstrap,
            hop_s=cfg.features.hop_ms / 1000,
        )
    cohort = None
    if cfg.learner.cohort_speakers and data.train:
        train_db = data.db.subset(data.train)
        cohort = Cohort(
            train_db,
            data.source(cfg.features, train_db, memory_bytes=0),
            cfg.sampler.frames,
            cfg.learner.cohort_speakers,
            seed=cfg.learner.seed,
        )
    mixed = use_mixed_precision(cfg.learner, device)
    log.info(
        "learner on %s%s; %d held-out speakers",
        device,
        " with mixed precision" if mixed else "",
        len(held),
    )
    return Learner(
        cfg,
        run_dir,
        evaluator,
        metrics,
        device,
        mixed,
        queue_depth=queue_depth,
        classes=data.classes(speed_copies(cfg)),
        cohort=cohort,
    )


class LearnerActor:
    """Runs with two threads (``max_concurrency=2``): ``train`` holds one, so ``stop`` can
    end a ``train`` call that waits for data; the other methods share one lock with
    ``train``, so a checkpoint never sees weights halfway through a step."""

    def __init__(
        self,
        config: dict[str, Any],
        run_dir: str,
        run_id: str,
        device: str = "auto",
        resume: str | None = None,
        redis_url: str = "",
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.cfg = config_from_dict(config)
        self.metrics = MetricsWriter.from_config(
            self.cfg.metrics, run_id, "learner", redis_url, RunDir(Path(run_dir)).tensorboard
        )
        self.stream = BatchStream(
            attach_queue(run_id), self.cfg.learner.prefetch, timeout=self.cfg.learner.data_timeout
        )
        self.learner = build_learner(self.cfg, run_dir, device, self.metrics, self.stream.depth)
        if resume:
            self.learner.restore(resolve(resume))
            self.metrics.resumed_at(self.learner.step)
        elif self.cfg.learner.init_from:  # fine-tuning: the parent's network, all else new
            lc = self.cfg.learner
            self.learner.start_from(Checkpoint(Path(lc.init_from)), lc.init_fingerprint)
        self.run_id = run_id
        self.lock = threading.Lock()

    def train(self, steps: int) -> dict[str, Any]:
        with self.lock:
            try:
                summary = self.learner.fit(self.stream, steps)
            except DataTimeout as exc:
                raise RuntimeError(
                    f"the learner is starved at step {self.learner.step}: {exc} "
                    f"(learner.data_timeout); {producers_alive(self.run_id)}"
                ) from None
        summary["stream"] = {
            "batches": self.stream.stats.batches,
            "lost": self.stream.stats.lost,
            "per_worker": self.stream.stats.per_worker,
        }
        return summary

    def stop(self) -> None:
        """End the current (and every later) ``train`` call at its next wait for data."""
        self.stream.stop()

    def evaluate(self) -> dict[str, float]:
        with self.lock:
            return self.learner.evaluate()

    def finish(self) -> dict[str, Any] | None:
        """The end of a run ended before max_steps: the end-of-run model
        (``learner.average_last``), calibrations and the AS-norm cohort."""
        with self.lock:
            return self.learner.finish()

    def save(self, reason: str = "exit") -> str | None:
        with self.lock:
            ckpt = self.learner.save(reason)
        if reason == "exit":
            self.metrics.close()  # the run ends after this: send what is buffered
        return str(ckpt.path) if ckpt else None

    def info(self) -> dict[str, Any]:
        return {
            "device": self.learner.device,
            "mixed_precision": self.learner.mixed,
            "step": self.learner.step,
            "params": int(self.learner.model.count_params()),
        }


def producers_alive(run_id: str, timeout: float = 2.0) -> str:
    """Which of the run's registered producers answer, for an error message."""
    try:
        names = ray.get(attach_registry(run_id).producers.remote(), timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a message, whatever went wrong
        return f"the run's registry does not answer ({exc})"
    alive, dead = [], []
    for wid, name in sorted(names.items()):
        try:
            ray.get(ray.get_actor(name, namespace=NAMESPACE).stats.remote(), timeout=timeout)
            alive.append(wid)
        except Exception:  # noqa: BLE001 - gone, dead or stuck: not alive
            dead.append(wid)
    if not names:
        return "no producer is registered for this run"
    return f"producers alive: {alive or 'none'}; not answering: {dead or 'none'}"
