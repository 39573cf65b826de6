"""Held-out evaluation during training: the held-out speakers' features, a fixed trial list,
and the EER and minDCF of the current model on them; with ``calibrate``, also the score
calibration fitted on the same trials with test sides cut to 2 s and 1 s (the duration
measure needs short inputs), its Cllr and actual DCF.

    evaluator = HeldOutEval(held_db, held_source, frames=160, n_trials=2000)
    result = evaluator(learner.embed)      # EvalResult
    result, calibrations = evaluator.evaluate(learner.embed, calibrate=True, cohort=None)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from learner.scoring.calibration import Calibration
from learner.scoring.pipeline import (
    COHORT_PER_SPEAKER,
    COHORT_SPEAKERS,
    CutEmbeddings,
    cohort_groups,
    cohort_vectors,
    cut_embeddings,
    fit_calibrations,
)
from learner.scoring.scores import EvalResult, bootstrap_eer, score_trials, summarize
from learner.scoring.trials import generate_trials
from learner.scoring.windows import Embedder, embed_features
from workers.audio import AudioError
from workers.cache import CachedSource
from workers.corpus import SpeakerDatabase

log = logging.getLogger(__name__)


def read_features(source: CachedSource, indices, what: str) -> tuple[list[np.ndarray], list[int]]:
    """The features of ``indices`` that can be read, and which those are (others logged)."""
    feats, kept = [], []
    for i in indices:
        try:
            feats.append(np.asarray(source.get(i), dtype=np.float32))
            kept.append(i)
        except AudioError as exc:
            log.warning("%s skips %s", what, exc)
    return feats, kept


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
        hop_s: float = 0.01,
    ) -> None:
        """``bootstrap``: resamples of the speakers for the EER's interval (0: none);
        ``hop_s``: seconds per feature frame (durations for the calibration)."""
        self.bootstrap, self.seed, self.hop_s = bootstrap, seed, hop_s
        feats, kept = read_features(source, range(len(db.utterances)), "evaluation")
        keep = [db.utterances[i] for i in kept]
        self.db = SpeakerDatabase(db.root, db.layout, keep, db.skipped)
        self.features = feats
        self.frames = frames
        self.trials = generate_trials(self.db, n_trials, seed)
        if not any(t[0] for t in self.trials):
            raise ValueError("held-out speakers give no target trials (need 2+ utterances each)")

    def __call__(self, embed: Embedder) -> EvalResult:
        return self.score(self.embeddings(embed))

    def embeddings(self, embed: Embedder) -> np.ndarray:
        """One unit-norm embedding per held-out utterance, in ``self.db``'s order."""
        return embed_features(self.features, embed, self.frames)

    def evaluate(
        self,
        embed: Embedder,
        calibrate: bool | Callable[[EvalResult], bool] = True,
        cohort: np.ndarray | None = None,
        threshold: float | None = None,
        fitted_on: str = "",
    ) -> tuple[EvalResult, dict[str, Calibration]]:
        """The evaluation (EER etc. on full-length trials, as :meth:`__call__`) and, with
        ``calibrate`` (or when ``calibrate(result)`` says so: the learner asks only for a
        new best, the one it stores), the calibrations fitted on the trials with their test
        sides cut (``cosine``, and ``asnorm`` with a ``cohort`` of unit vectors); the result
        then carries the calibration's report (Cllr cross-fitted over speakers, minCllr,
        actual DCF, false-accept and miss rates at ``threshold``, default the evaluation's
        own EER threshold). Calibrating doubles the evaluation's embedding work."""
        emb = self.embeddings(embed)
        result = self.score(emb)
        if not (calibrate(result) if callable(calibrate) else calibrate):
            return result, {}
        if threshold is None:
            threshold = result.threshold
        groups = [self.db.utterances[i].speaker for _, i, _ in self.trials]
        where = fitted_on or f"{len(self.db.speakers)} held-out speakers"
        scored = self.cut_embeddings(embed, emb).scored(self.trials, cohort)
        report, cals = fit_calibrations(scored, groups, where, threshold=threshold)
        return dataclasses.replace(result, **report), cals

    def cut_embeddings(self, embed: Embedder, emb: np.ndarray | None = None) -> CutEmbeddings:
        """The held-out utterances at full length (``emb`` when already embedded) and cut
        to each of the calibration's durations (``learner.scoring.pipeline``)."""
        return cut_embeddings(self.features, embed, self.frames, self.hop_s, full=emb)

    def score(self, emb: np.ndarray) -> EvalResult:
        """The trials scored with one embedding per utterance of ``self.db`` (any system's)."""
        return self.summary(*score_trials(emb, self.trials))

    def summary(self, scores: np.ndarray, labels: np.ndarray) -> EvalResult:
        """EER, minDCF and (with ``bootstrap``) the EER's interval of scores of ``self.trials``
        in order: cosine, or normalised (AS-norm) ones."""
        result = summarize(scores, labels)
        if self.bootstrap:
            enrol = np.array([self.db.utterances[i].speaker for _, i, _ in self.trials])
            low, high = bootstrap_eer(scores, labels, enrol, self.bootstrap, self.seed)
            result = dataclasses.replace(result, eer_low=low, eer_high=high)
        return result


class Cohort:
    """Training speakers for score normalisation (AS-norm), chosen by the one cohort rule
    (``learner.scoring.pipeline.cohort_groups``). The features are read on first use (a
    run's end), not at start."""

    def __init__(
        self,
        db: SpeakerDatabase,
        source: CachedSource,
        frames: int,
        speakers: int = COHORT_SPEAKERS,
        per_speaker: int = COHORT_PER_SPEAKER,
        seed: int = 0,
    ) -> None:
        self.groups = cohort_groups(
            [db.by_speaker[s] for s in db.speakers], speakers, per_speaker, seed
        )
        self.source, self.frames = source, frames
        self._features: list[list[np.ndarray]] | None = None

    def features(self) -> list[list[np.ndarray]]:
        if self._features is None:
            groups = [read_features(self.source, group, "cohort")[0] for group in self.groups]
            self._features = [feats for feats in groups if feats]
        return self._features

    def __call__(self, embed: Embedder) -> np.ndarray:
        """``[speakers, D]`` unit vectors."""
        groups = self.features()
        flat = [f for feats in groups for f in feats]
        if not flat:
            return np.zeros((0, 0), np.float32)
        emb = embed_features(flat, embed, self.frames)
        ends = np.cumsum([len(feats) for feats in groups])
        return cohort_vectors(
            emb, [range(e - len(g), e) for e, g in zip(ends, groups, strict=True)]
        )
