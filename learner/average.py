"""Model averaging: the mean of a run's last N checkpoints (WeSpeaker's ``average_model``).

Averaging the weights of checkpoints along the end of training smooths out the
last steps' noise; it costs nothing at inference. Batch-norm statistics are
averaged like every other variable. The result is an ordinary checkpoint (no
optimizer state) under ``<run>/averaged/``, usable by every command:

Examples:
    python -m learner.average runs/20261124-073721-3f9a --last 3
    python -m learner.verify a.wav b.wav -c runs/20261124-073721-3f9a/averaged

A run with ``learner.average_last=N`` does this itself when it reaches
``learner.max_steps`` and evaluates the averaged model on its held-out speakers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from learner.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    assign_arrays,
    variables_to_arrays,
)
from learner.cli import guarded

log = logging.getLogger(__name__)


def average_weights(ckpts: list[Checkpoint]) -> dict[str, np.ndarray]:
    """The element-wise mean of the checkpoints' model weights (float64 sums)."""
    if not ckpts:
        raise CheckpointError("no checkpoints to average")
    specs = {c.state().get("feature_spec") for c in ckpts}
    if len(specs) != 1:
        raise CheckpointError("the checkpoints were made with different feature settings")
    total: dict[str, np.ndarray] = {}
    for ckpt in ckpts:
        arrays = ckpt.arrays("weights")
        if total and (set(arrays) != set(total) or any(
            arrays[k].shape != total[k].shape for k in arrays
        )):  # fmt: skip
            raise CheckpointError(f"{ckpt.path}: another model than {ckpts[0].path}")
        for k, v in arrays.items():
            total[k] = total.get(k, 0) + v.astype(np.float64)
    first = ckpts[0].arrays("weights")
    return {k: (v / len(ckpts)).astype(first[k].dtype) for k, v in total.items()}


def write_average(
    run: str | Path, last: int, extra_state: dict | None = None
) -> tuple[Checkpoint, list[Checkpoint]]:
    """Average the run's last ``last`` checkpoints into ``<run>/averaged/``."""
    run = Path(run)
    found = CheckpointManager(run / "checkpoints").all()
    if len(found) < 2:
        raise CheckpointError(f"{run}: {len(found)} checkpoint(s); averaging needs 2 or more")
    used = found[-last:]
    newest = used[-1]
    state = {k: v for k, v in newest.state().items() if k not in ("format", "step", "saved_at")}
    state.update(reason="average", averaged_from=[c.path.name for c in used], **(extra_state or {}))
    out = CheckpointManager(run / "averaged", keep=1)
    ckpt = out.save(newest.step, average_weights(used), {}, state, best=True)
    return ckpt, used


def end_of_run(learner) -> dict | None:
    """The mean of a learner's last ``learner.average_last`` checkpoints (the current
    weights saved first), evaluated on its held-out speakers and written to
    ``<run>/averaged/`` with that evaluation's threshold; the learner keeps its weights."""
    if learner.checkpoints is None or learner.diverged:
        return None
    latest = learner.checkpoints.latest()
    if latest is None or latest.step != learner.step:
        learner.save("final")
    used = learner.checkpoints.all()[-learner.cfg.learner.average_last :]
    if len(used) < 2:
        log.info("not averaging: %d checkpoint(s)", len(used))
        return None
    current = variables_to_arrays(learner.model.variables)
    assign_arrays(learner.model.variables, average_weights(used), "averaged weights")
    result = learner.evaluator(learner.embed).as_dict() if learner.evaluator else {}
    assign_arrays(learner.model.variables, current, "current weights")
    extra = {"averaged_eval": result, **({"threshold": result["threshold"]} if result else {})}
    ckpt, _ = write_average(learner.checkpoints.dir.parent, len(used), extra)
    averaged = {"path": str(ckpt.path), "from": [c.step for c in used], **result}
    if result:
        log.info(
            "averaged model of steps %s: held-out EER %.2f%% (last %.2f%%)",
            averaged["from"],
            100 * result["eer"],
            100 * learner.last_eval.get("eer", float("nan")),
        )
    learner.metrics.event("average", averaged)
    return averaged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m learner.average",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a run folder (its checkpoints/ are averaged)")
    p.add_argument("--last", type=int, default=3, help="how many of the newest checkpoints")
    a = p.parse_args(argv)
    if a.last < 2:
        p.error("--last must be at least 2")

    def body() -> int:
        ckpt, used = write_average(a.run, a.last)
        print(f"averaged {', '.join(c.path.name for c in used)} into {ckpt.path}")
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
