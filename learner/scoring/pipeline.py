"""The one calibration pipeline and the one cohort rule. NumPy only, around an ``Embedder``.

Every calibration this project fits goes through here: the end of a training run (the
held-out speakers, ``learner.heldout``), ``python -m learner.calibrate`` (a user's
labelled recordings) and ``python -m learner.adapt`` (unlabelled recordings of a domain).
Each utterance is embedded at full length and cut to each of ``CUTS`` (so the duration
measure is fitted down to the shortest speech the commands accept); trial ``k``'s test
side takes version ``k % (1 + len(CUTS))`` in turn; the calibrations are fitted on those
scores, cosine and (with a cohort) AS-norm.

    cuts = cut_embeddings(features, embed, frames=160, hop_s=0.01)
    cohort = cohort_vectors(cuts.full, cohort_groups(by_speaker, seed=0))
    report, cals = fit_calibrations(cuts.scored(trials, cohort), groups, fitted_on="17 speakers")

The cohort rule (AS-norm): up to ``COHORT_SPEAKERS`` groups chosen with a seed (speakers,
or single recordings when there are no labels), each the unit mean of its first
``COHORT_PER_SPEAKER`` utterances' embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from learner.scoring.calibration import (
    CUTS,
    Calibration,
    calibration_report,
    cut_frames,
    fit_calibration,
    log_duration,
    with_cuts,
)
from learner.scoring.scores import as_norm, score_trials, summarize
from learner.scoring.windows import Embedder, embed_features

COHORT_SPEAKERS = 300  # the cohort's groups at most (learner.cohort_speakers overrides)
COHORT_PER_SPEAKER = 3  # utterances averaged per group


@dataclass
class Scored:
    """Trials scored once: the scores by kind (``cosine``, ``asnorm``), labels, quality,
    and which trials have their test side at full length."""

    kinds: dict[str, np.ndarray]
    labels: np.ndarray
    q: np.ndarray
    full: np.ndarray


@dataclass
class CutEmbeddings:
    """Unit embeddings stacked ``[full; cut 1; cut 2; ...]`` (``n`` rows each) and the
    seconds of speech of each row."""

    emb: np.ndarray
    secs: np.ndarray
    n: int

    @property
    def full(self) -> np.ndarray:
        return self.emb[: self.n]

    def trials(self, trials) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``trials`` (``label, i, j`` over the ``n`` utterances) with their test sides cut
        in turn: ``(trials over the stacked rows, cosine scores, labels, quality)``."""
        cut = with_cuts(trials, self.n)
        scores, labels = score_trials(self.emb, cut)
        return cut, scores, labels, log_duration(self.secs[cut[:, 1]], self.secs[cut[:, 2]])

    def scored(self, trials, cohort: np.ndarray | None = None) -> Scored:
        """``trials`` scored once with their test sides cut in turn: cosine, and AS-norm
        against ``cohort`` (unit vectors) when one is given."""
        cut, scores, labels, q = self.trials(trials)
        kinds = {"cosine": scores}
        if cohort is not None and len(cohort):
            kinds["asnorm"] = as_norm(scores, self.emb, cut, cohort)
        return Scored(kinds, labels, q, cut[:, 2] < self.n)

    def transformed(self, transform: Callable[[np.ndarray], np.ndarray]) -> CutEmbeddings:
        """The same rows through ``transform`` (a domain transform), seconds kept."""
        return CutEmbeddings(transform(self.emb), self.secs, self.n)


def cut_embeddings(
    features: Sequence[np.ndarray],
    embed: Embedder,
    frames: int,
    hop_s: float,
    full: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> CutEmbeddings:
    """Each utterance's embedding at full length (``full`` when already computed) and cut
    to each of ``CUTS`` seconds (no longer than it is). ``progress(k)``: called with the
    number of versions embedded so far, one call per version."""
    lengths = np.array([cut_frames(len(f), hop_s) for f in features]).reshape(-1, 1 + len(CUTS))
    versions = []
    for k, cut in enumerate(lengths.T):
        if k == 0 and full is not None:
            versions.append(np.asarray(full, np.float32))
        else:
            versions.append(
                embed_features([f[:n] for f, n in zip(features, cut, strict=True)], embed, frames)
            )
        if progress is not None:
            progress(k + 1)
    return CutEmbeddings(np.concatenate(versions), lengths.T.reshape(-1) * hop_s, len(features))


def cohort_groups(
    groups: Sequence[Sequence[int]],
    speakers: int = COHORT_SPEAKERS,
    per_speaker: int = COHORT_PER_SPEAKER,
    seed: int = 0,
) -> list[list[int]]:
    """The cohort rule: up to ``speakers`` of ``groups`` (item indices per speaker, or one
    item per group without labels), chosen with ``seed`` and kept in their order, each cut
    to its first ``per_speaker`` items."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.permutation(len(groups))[:speakers])
    return [list(groups[k])[:per_speaker] for k in chosen if len(groups[k])]


def cohort_vectors(emb: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``[groups, D]``: each group's unit mean of the rows of ``emb`` it names."""
    means = [emb[list(g)].mean(axis=0) for g in groups if len(g)]
    if not means:
        return np.zeros((0, emb.shape[1] if emb.ndim == 2 else 0), np.float32)
    out = np.stack(means)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit_calibrations(
    scored: Scored,
    groups,
    fitted_on: str = "",
    prior: float = 0.5,
    threshold: float | None = None,
) -> tuple[dict, dict[str, Calibration]]:
    """The calibrations of labelled trials scored by :meth:`CutEmbeddings.scored`, one per
    kind of score (``cosine``, and ``asnorm`` when a cohort was given). ``groups``: the
    enrolment side's speaker of each trial (the report's Cllr is cross-fitted over them).
    Returns ``(report, calibrations)``: the report holds Cllr, minCllr, actual DCF, the
    rates at ``threshold`` (default: the full-length trials' EER threshold) and, with a
    cohort, the AS-norm EER and minDCF of the full-length trials."""
    scores, labels, q, full = scored.kinds["cosine"], scored.labels, scored.q, scored.full
    if threshold is None:
        threshold = summarize(scores[full], labels[full]).threshold
    report = calibration_report(scores, labels, q, np.asarray(groups), threshold)
    cals = {
        kind: fit_calibration(s, labels, q, prior, kind, fitted_on)
        for kind, s in scored.kinds.items()
    }
    if "asnorm" in scored.kinds:
        as_full = summarize(scored.kinds["asnorm"][full], labels[full])
        report.update(asnorm_eer=as_full.eer, asnorm_min_dcf_01=as_full.min_dcf_01)
    return report, cals
