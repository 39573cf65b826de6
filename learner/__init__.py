"""The consumer side: model, loss, learner actor, checkpoints, evaluation and inference."""
