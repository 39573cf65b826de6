"""Held-out evaluation during training: the held-out speakers' features, a fixed trial list,
and the EER and minDCF of the current model on them.

    evaluator = HeldOutEval(held_db, held_source, frames=160, n_trials=2000)
    result = evaluator(learner.embed)      # EvalResult
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from learner.scoring.scores import EvalResult, bootstrap_eer, score_trials, summarize
from learner.scoring.trials import generate_trials
from learner.scoring.windows import Embedder, embed_features
from workers.audio import AudioError
from workers.cache import CachedSource
from workers.corpus import SpeakerDatabase

log = logging.getLogger(__name__)


class HeldOutEval:
    """The held-out speakers' utterances with their features, and a fixed trial list."""

    def __init__(
        self,
        db: SpeakerDatabase,
        source: CachedSource,
        frames: int,
        n_trials: int = 2000,
        seed: int = 0,
        bootstrap: int = 200,
    ) -> None:
        """``bootstrap``: resamples of the speakers for the EER's interval (0: none)."""
        self.bootstrap, self.seed = bootstrap, seed
        feats, keep = [], []
        for i in range(len(db.utterances)):
            try:
                feats.append(np.asarray(source.get(i), dtype=np.float32))
                keep.append(db.utterances[i])
            except AudioError as exc:
                log.warning("evaluation skips %s", exc)
        self.db = SpeakerDatabase(db.root, db.layout, keep, db.skipped)
        self.features = feats
        self.frames = frames
        self.trials = generate_trials(self.db, n_trials, seed)
        if not any(t[0] for t in self.trials):
            raise ValueError("held-out speakers give no target trials (need 2+ utterances each)")

    def __call__(self, embed: Embedder) -> EvalResult:
        return self.score(embed_features(self.features, embed, self.frames))

    def score(self, emb: np.ndarray) -> EvalResult:
        """The trials scored with one embedding per utterance of ``self.db`` (any system's)."""
        scores, labels = score_trials(emb, self.trials)
        result = summarize(scores, labels)
        if self.bootstrap:
            enrol = np.array([self.db.utterances[i].speaker for _, i, _ in self.trials])
            low, high = bootstrap_eer(scores, labels, enrol, self.bootstrap, self.seed)
            result = dataclasses.replace(result, eer_low=low, eer_high=high)
        return result
