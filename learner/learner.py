"""The learner: consumes an iterator of batches, trains, evaluates, checkpoints.

It never touches plumbing: tests hand it a list of batches, the learner actor
hands it the run's ``BatchStream``. Per step it records the time spent waiting
for data, the train-step time and the producer's build time, so whether the
device or the data is the bottleneck is visible at once.

    learner = Learner(cfg, run_dir=Path("runs/x"), evaluator=held_out)
    summary = learner.fit(batches, steps=100)
    learner.save("exit")
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cluster.batch import Batch
from cluster.config import RunConfig
from cluster.metric_schema import wait_share
from cluster.metrics import EVENT_AVERAGE, EVENT_CHECKPOINT, EVENT_COLLAPSE, NULL_METRICS
from cluster.runs import RunDir
from learner.averaging import average_weights, write_average
from learner.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    assign_arrays,
    variables_to_arrays,
)
from learner.heldout import Cohort, HeldOutEval
from learner.train_step import TrainStep, configure

log = logging.getLogger(__name__)


class ConstantFeatures(ValueError):
    """Every value of a batch is the same: the feature settings (or the audio) leave nothing
    to learn from. Bad input: the driver exits 2."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights in memory are no longer usable."""


COLLAPSE_SPREAD = 1e-3  # 1 - mean pairwise cosine of anchors below this: all embeddings alike
COLLAPSE_STEPS = 20


class CollapseWatch:
    """Says when every embedding has become the same: the anchors' mean pairwise cosine above
    ``1 - COLLAPSE_SPREAD`` for ``COLLAPSE_STEPS`` steps (log and ``collapse`` event)."""

    def __init__(self, metrics) -> None:
        self.metrics, self.collapsed, self._low = metrics, False, 0

    def observe(self, spread: float, step: int) -> None:
        self._low = self._low + 1 if spread < COLLAPSE_SPREAD else 0
        if self._low >= COLLAPSE_STEPS and not self.collapsed:
            self.collapsed = True
            log.warning(
                "embeddings have collapsed: for %d steps every anchor embedding is the "
                "same (mean pairwise cosine > %.3f). Lower the learning rate or use "
                "learner.mining=semihard.",
                COLLAPSE_STEPS,
                1 - COLLAPSE_SPREAD,
            )
            self.metrics.event(EVENT_COLLAPSE, {"step": step})
        elif self._low == 0:
            self.collapsed = False


class Learner:
    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        evaluator: HeldOutEval | None = None,
        metrics: Any = NULL_METRICS,
        device: str = "cpu",
        mixed: bool = False,
        queue_depth: Any = None,
        classes: np.ndarray | None = None,
        cohort: Cohort | None = None,
    ) -> None:
        """``classes``: batch label -> training-speaker class (``RunData.classes``), for the
        losses with a classifier; ``cohort``: training speakers for the AS-norm cohort
        stored with the checkpoints a run ends with."""
        configure(device, mixed)
        self.cfg, self.evaluator, self.metrics, self.cohort = cfg, evaluator, metrics, cohort
        self.device, self.mixed = device, mixed
        self.queue_depth = queue_depth  # callable -> int, or None
        self.train_step = TrainStep(cfg, mixed, classes)
        self.model = self.train_step.model
        self.spec = cfg.features.fingerprint()
        self.checkpoints = (
            CheckpointManager(RunDir(Path(run_dir)).checkpoints, cfg.learner.keep_checkpoints)
            if run_dir is not None
            else None
        )
        self.best_eer = math.inf  # the best smoothed held-out EER
        self.smoothed: float | None = None
        self.averaged: dict[str, Any] | None = None  # the end-of-run average, once made
        self.saved_at = time.time()  # last checkpoint (or start), for learner.checkpoint_minutes
        self.threshold: float | None = None
        self.calibration: dict[str, Any] = {}  # the best evaluation's, by kind
        self.finished = False
        self.last_eval: dict[str, float] = {}
        self.sampler_states: dict[str, str] = {}
        self.diverged = False
        self.collapse = CollapseWatch(metrics)
        self.totals = {"wait": 0.0, "step": 0.0, "build": 0.0, "steps": 0}
        self.recent: deque[dict[str, float]] = deque(maxlen=200)

    @property
    def step(self) -> int:
        return self.train_step.step

    # -- training ---------------------------------------------------------------------------
    def fit(self, batches: Iterable[Batch], steps: int | None = None) -> dict[str, Any]:
        """Train on ``batches`` for ``steps`` steps (or until they run out or
        ``learner.max_steps`` is reached), evaluating and checkpointing on schedule."""
        it: Iterator[Batch] = iter(batches)
        goal = (
            self.cfg.learner.max_steps
            if steps is None
            else min(self.step + steps, self.cfg.learner.max_steps)
        )
        lc = self.cfg.learner
        while self.step < goal:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            waited = time.perf_counter() - t0
            record = self.train_batch(batch, waited)
            if lc.eval_every and self.step % lc.eval_every == 0 and self.evaluator is not None:
                record.update(self.evaluate())
            if lc.checkpoint_every and self.step % lc.checkpoint_every == 0:
                self.save("periodic")
            elif lc.checkpoint_minutes and time.time() - self.saved_at > 60 * lc.checkpoint_minutes:
                self.save("timed")  # slow steps (base on a CPU): never hours of work at risk
        if self.step >= lc.max_steps:
            self.finish()
        return self.summary()

    def finish(self) -> dict[str, Any] | None:
        """The end of a run: the averaged model (:meth:`average`), then the checkpoints a
        user loads (the best and the average) get their calibrations, AS-norm included,
        and the cohort (``calibration.json``, ``cohort.npz``). Returns the average."""
        averaged = self.average()
        if self.finished or self.checkpoints is None or self.evaluator is None or self.diverged:
            return averaged
        self.finished = True
        if not self.cfg.learner.calibrate:
            return averaged
        targets = [self.checkpoints.best()]
        if averaged is not None:
            targets.append(Checkpoint(Path(averaged["path"])))
        current = variables_to_arrays(self.model.variables)
        try:
            for ckpt in [c for c in targets if c is not None]:
                assign_arrays(self.model.variables, ckpt.arrays("weights"), f"{ckpt.path}")
                cohort = self.cohort(self.embed) if self.cohort is not None else None
                _, cals = self.evaluator.evaluate(
                    self.embed, True, cohort, ckpt.state().get("threshold")
                )
                ckpt.write_extras({k: c.as_dict() for k, c in cals.items()}, cohort)
                log.info(
                    "calibrated %s: %s%s",
                    ckpt.path.name,
                    ", ".join(f"{k} Cllr {c.report['cllr']:.3f}" for k, c in cals.items()),
                    f"; cohort of {len(cohort)} speakers" if cohort is not None else "",
                )
        finally:
            assign_arrays(self.model.variables, current, "current weights")
        return averaged

    def average(self) -> dict[str, Any] | None:
        """The end-of-run model, made once when ``learner.average_last`` asks for one: the
        mean of the last checkpoints (the current weights saved first), evaluated on the
        held-out speakers and written to ``<run>/averaged/`` with that evaluation's
        threshold; the learner keeps its own weights."""
        if self.cfg.learner.average_last < 2 or self.averaged is not None:
            return self.averaged
        if self.checkpoints is None or self.diverged:
            return None
        latest = self.checkpoints.latest()
        if latest is None or latest.step != self.step:
            self.save("final")
        used = self.checkpoints.all()[-self.cfg.learner.average_last :]
        if len(used) < 2:
            log.info("not averaging: %d checkpoint(s)", len(used))
            return None
        current = variables_to_arrays(self.model.variables)
        assign_arrays(self.model.variables, average_weights(used), "averaged weights")
        result = self.evaluator(self.embed).as_dict() if self.evaluator else {}
        assign_arrays(self.model.variables, current, "current weights")
        extra = {"averaged_eval": result, **({"threshold": result["threshold"]} if result else {})}
        extra["calibration"] = {}  # the newest checkpoint's is not this model's (finish fits)
        ckpt, _ = write_average(self.checkpoints.dir.parent, len(used), extra)
        self.averaged = {"path": str(ckpt.path), "from": [c.step for c in used], **result}
        if result:
            log.info(
                "averaged model of steps %s: held-out EER %.2f%% (last %.2f%%)",
                self.averaged["from"],
                100 * result["eer"],
                100 * self.last_eval.get("eer", float("nan")),
            )
        self.metrics.event(EVENT_AVERAGE, self.averaged)
        return self.averaged

    def train_batch(self, batch: Batch, waited: float = 0.0) -> dict[str, float]:
        s = self.cfg.sampler
        batch.validate(
            spec=self.spec, triplets=s.triplets, frames=s.frames, n_mels=self.cfg.features.n_mels
        )
        if batch.features.max() == batch.features.min():  # ~1 ms for a demo batch
            f = self.cfg.features
            raise ConstantFeatures(
                f"batch {batch.worker_id}/{batch.seq} at step {self.step}: every feature value "
                f"is {float(batch.features.flat[0]):g}, there is nothing to learn. Check the "
                f"feature settings (features.fmin {f.fmin:g}, features.fmax {f.fmax:g}, "
                f"features.n_mels {f.n_mels}, features.n_fft {f.n_fft}) and that the audio "
                "is not silent"
            )
        if self.cfg.learner.max_minutes:  # time spent so far, across resumes
            spent = self.totals["wait"] + self.totals["step"]
            self.train_step.set_progress(spent / (60 * self.cfg.learner.max_minutes))
        lr = self.train_step.lr()
        t0 = time.perf_counter()
        out = self.train_step(batch.features, batch.speakers)
        took = time.perf_counter() - t0
        if not math.isfinite(out["loss"]):
            self.diverged = True
            last = self.checkpoints.latest() if self.checkpoints else None
            raise TrainingDiverged(
                f"loss is {out['loss']} at step {self.step}: training stopped. The last good "
                f"checkpoint is {last.path if last else 'none (none was written yet)'}; "
                f"resume from it with a lower learning rate (--set learner.lr=...)"
            )
        self.collapse.observe(out["spread"], self.step)
        if batch.sampler_state:
            self.sampler_states[str(batch.worker_id)] = batch.sampler_state
        record = {
            "step": self.step,
            **out,
            "wait_s": waited,
            "step_s": took,
            "build_s": batch.build_seconds,
            "lr": lr,
            "worker": batch.worker_id,
            "queue_depth": self.queue_depth() if self.queue_depth else None,
        }
        self.totals["wait"] += waited
        self.totals["step"] += took
        self.totals["build"] += batch.build_seconds
        self.totals["steps"] += 1
        self.recent.append(record)
        self.metrics.train(record)
        return record

    # -- evaluation -------------------------------------------------------------------------
    def embed(self, features: np.ndarray) -> np.ndarray:
        return self.train_step.embed(features)

    def evaluate(self) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        t0 = time.perf_counter()
        alpha = self.cfg.learner.eval_smoothing

        def smoothed(eer: float) -> float:
            return eer if self.smoothed is None else alpha * eer + (1 - alpha) * self.smoothed

        # Calibrated only when this evaluation is a new best (what the checkpoint keeps):
        # calibrating doubles an evaluation's embedding work (bench/calibration.py).
        evaluation, cals = self.evaluator.evaluate(
            self.embed, self.cfg.learner.calibrate and (lambda r: smoothed(r.eer) < self.best_eer)
        )
        result = evaluation.as_dict()
        result["eval_s"] = time.perf_counter() - t0
        # "Best" on an exponential moving average: one lucky evaluation does not win.
        self.smoothed = smoothed(result["eer"])
        result["eer_smoothed"] = self.smoothed
        self.last_eval = {"step": self.step, **result}
        is_best = self.smoothed < self.best_eer
        if is_best:
            self.best_eer, self.threshold = self.smoothed, result["threshold"]
            self.calibration = {k: c.as_dict() for k, c in cals.items()}
        interval = (
            f" [95% CI {100 * result['eer_low']:.2f}-{100 * result['eer_high']:.2f}]"
            if "eer_low" in result
            else ""
        )
        log.info(
            "step %d: held-out EER %.2f%%%s, smoothed %.2f%% (best %.2f%%), minDCF(0.01) %.3f",
            self.step,
            100 * result["eer"],
            interval,
            100 * self.smoothed,
            100 * self.best_eer,
            result["min_dcf_01"],
        )
        self.metrics.eval(self.step, result)
        if is_best and self.checkpoints is not None and self.step > 0:
            self.save("best", best=True)
        return result

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "feature_spec": self.spec,
            "model": {
                "n_mels": self.cfg.features.n_mels,
                "frames": self.cfg.sampler.frames,
                **self.cfg.model.__dict__,
            },
            "sampler_states": self.sampler_states,
            "best_eer": None if math.isinf(self.best_eer) else self.best_eer,
            "eer_smoothed": self.smoothed,
            "threshold": self.threshold,
            "calibration": self.calibration,
            "last_eval": self.last_eval,
            "totals": self.totals,
        }

    def save(self, reason: str = "periodic", best: bool = False) -> Checkpoint | None:
        if self.checkpoints is None:
            return None
        if self.diverged:
            log.warning("not saving a checkpoint after the loss diverged")
            return None
        # Every step up to this checkpoint reaches the store before the checkpoint exists:
        # after a kill, a resumed run rewinds the series to its checkpoint, and nothing
        # before it may be missing.
        # When Redis is unreachable the entries still buffered travel inside the checkpoint
        # (cluster.series_rewind.resume_series adds them to the store when a run resumes from it).
        unsent = [] if self.metrics.flush() else self.metrics.unsent()
        ckpt = self.checkpoints.save(
            self.step,
            variables_to_arrays(self.model.variables),
            variables_to_arrays(self.train_step.optimizer.variables),
            {**self.state(), "reason": reason, "unsent_metrics": unsent},
            best=best,
            extra=self._head_arrays(),
        )
        self.saved_at = time.time()
        size = self.checkpoints.size_bytes(ckpt)
        log.info("checkpoint %s (%s, %.1f MB)", ckpt.path.name, reason, size / 2**20)
        self.metrics.event(
            EVENT_CHECKPOINT,
            {"step": self.step, "reason": reason, "bytes": size, "path": str(ckpt.path)},
        )
        return ckpt

    def _head_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        head = self.train_step.head
        return {"head": variables_to_arrays(head.variables)} if head is not None else {}

    def start_from(self, ckpt: Checkpoint, fingerprint: str = "") -> None:
        """Fine-tuning (``learner.init_from``): the network's weights from ``ckpt``, whose
        features must be this run's and whose weights must still be the ones the run was
        started from (``fingerprint``); the classifier head, optimiser and schedule start
        afresh."""
        state = ckpt.state()
        if state.get("feature_spec") != self.spec:
            raise CheckpointError(
                f"{ckpt.path} was trained with feature spec {state.get('feature_spec')}, this "
                f"run uses {self.spec}: the feature settings differ"
            )
        if fingerprint and ckpt.fingerprint() != fingerprint:
            raise CheckpointError(
                f"{ckpt.path}: its weights are not the ones this run was started from "
                f"({fingerprint}): the parent checkpoint changed"
            )
        assign_arrays(self.model.variables, ckpt.arrays("weights"), f"{ckpt.path} weights")
        log.info("fine-tuning from %s (weights %s)", ckpt.path, fingerprint or "unchecked")

    def restore(self, ckpt: Checkpoint) -> dict[str, Any]:
        state = ckpt.state()
        if state.get("feature_spec") != self.spec:
            raise CheckpointError(
                f"{ckpt.path} was trained with feature spec {state.get('feature_spec')}, this "
                f"run uses {self.spec}: the feature settings differ"
            )
        assign_arrays(self.model.variables, ckpt.arrays("weights"), f"{ckpt.path} weights")
        if self.train_step.head is not None:
            assign_arrays(self.train_step.head.variables, ckpt.arrays("head"), f"{ckpt.path} head")
        assign_arrays(
            self.train_step.optimizer.variables, ckpt.arrays("optimizer"), f"{ckpt.path} optimizer"
        )
        self.best_eer = state["best_eer"] if state.get("best_eer") is not None else math.inf
        self.smoothed = state.get("eer_smoothed")
        self.threshold = state.get("threshold")
        self.calibration = dict(state.get("calibration") or {})
        self.last_eval = state.get("last_eval") or {}
        self.sampler_states = dict(state.get("sampler_states") or {})
        # Time spent before the resume: a learner.max_minutes schedule goes on from there.
        self.totals.update(state.get("totals") or {})
        log.info("resumed from %s at step %d", ckpt.path, self.step)
        return state

    # -- reporting --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        recent = list(self.recent)[-20:]
        mean = {
            k: float(np.mean([r[k] for r in recent])) if recent else float("nan")
            for k in ("loss", "cos_ap", "cos_an")  # what the driver's progress bar shows
        }
        t = self.totals
        return {
            "step": self.step,
            "recent": mean,
            "wait_share": wait_share(t["wait"], t["step"]),
            "best_eer": None if math.isinf(self.best_eer) else self.best_eer,
            "last_eval": self.last_eval,
            "averaged": self.averaged,
            "totals": dict(self.totals),
        }
