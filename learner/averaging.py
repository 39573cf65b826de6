"""Model averaging: the mean of a run's last N checkpoints (WeSpeaker's ``average_model``).

Averaging the weights of checkpoints along the end of training smooths out the
last steps' noise; it costs nothing at inference. Batch-norm statistics are
averaged like every other variable. The result is an ordinary checkpoint (no
optimizer state) under ``<run>/averaged/``, usable by every command. A run with
``learner.average_last=N`` makes it itself (:meth:`learner.learner.Learner.average`);
``python -m learner.average`` (:mod:`learner.commands.average`) makes it for any run.

    ckpt, used = write_average("runs/20261124-073721-3f9a", last=3)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cluster.runs import RunDir
from learner.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
)

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
        same_model = set(arrays) == set(total) and all(
            arrays[k].shape == total[k].shape for k in arrays
        )
        if total and not same_model:
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
    found = CheckpointManager(RunDir(run).checkpoints).all()
    if len(found) < 2:
        raise CheckpointError(f"{run}: {len(found)} checkpoint(s); averaging needs 2 or more")
    used = found[-last:]
    newest = used[-1]
    state = {k: v for k, v in newest.state().items() if k not in ("format", "step", "saved_at")}
    state.update(reason="average", averaged_from=[c.path.name for c in used], **(extra_state or {}))
    out = CheckpointManager(RunDir(run).averaged, keep=1)
    ckpt = out.save(newest.step, average_weights(used), {}, state, best=True)
    return ckpt, used
