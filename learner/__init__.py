"""The consumer side: training (the driver, the learner actor, model, loss, checkpoints,
held-out evaluation, averaging) here; the scoring library in :mod:`learner.scoring`
(NumPy only) and the user commands in :mod:`learner.commands` (``python -m learner.verify``
and the others run them through thin modules of the same names here)."""
