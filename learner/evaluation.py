"""Held-out evaluation: utterance embeddings, a fixed trial list, EER and minDCF.

Utterances are embedded whole: their log-mel frames are cut into windows of
``frames`` (half-overlapping; a short utterance is tiled), each window is
embedded and the mean is L2-normalised. The same code serves the learner's
periodic evaluation and the inference commands.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from learner.scoring import eer, min_dcf
from workers.audio import AudioError
from workers.cache import FeatureSource
from workers.corpus import SpeakerDatabase
from workers.features import fit_frames

log = logging.getLogger(__name__)

Embedder = Callable[[np.ndarray], np.ndarray]  # [N, T, M] float32 -> [N, D] unit vectors


def windows(features: np.ndarray, frames: int) -> np.ndarray:
    """``[W, frames, M]`` half-overlapping windows covering the utterance."""
    n = len(features)
    if n <= frames:
        return fit_frames(features, frames, 0)[None]
    hop = max(1, frames // 2)
    starts = list(range(0, n - frames + 1, hop))
    if starts[-1] != n - frames:
        starts.append(n - frames)
    return np.stack([features[s : s + frames] for s in starts])


def embed_features(
    feature_list: list[np.ndarray], embed: Embedder, frames: int, batch: int = 64
) -> np.ndarray:
    """One unit-norm embedding per utterance (mean over its windows)."""
    wins = [windows(np.asarray(f, dtype=np.float32), frames) for f in feature_list]
    flat = np.concatenate(wins) if wins else np.zeros((0, frames, 1), np.float32)
    out = (
        np.concatenate([embed(flat[i : i + batch]) for i in range(0, len(flat), batch)])
        if len(flat)
        else np.zeros((0, 0), np.float32)
    )
    result, pos = [], 0
    for w in wins:
        e = out[pos : pos + len(w)].mean(axis=0)
        result.append(e / max(np.linalg.norm(e), 1e-12))
        pos += len(w)
    return np.stack(result).astype(np.float32) if result else out


def generate_trials(
    db: SpeakerDatabase, n_trials: int, seed: int = 0
) -> list[tuple[int, int, int]]:
    """``(label, i, j)`` over utterance indices of ``db``: up to half target pairs (all of
    them when fewer), the rest non-target pairs, both drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    targets = [
        (1, i, j) for s in db.speakers for i, j in itertools.combinations(db.by_speaker[s], 2)
    ]
    if len(targets) > n_trials // 2:
        keep = rng.choice(len(targets), n_trials // 2, replace=False)
        targets = [targets[k] for k in sorted(keep)]
    n_non = max(n_trials - len(targets), len(targets))
    spk = np.array([db.speaker_index[u.speaker] for u in db.utterances])
    nontargets: set[tuple[int, int, int]] = set()
    max_pairs = (len(spk) ** 2 - sum(len(v) ** 2 for v in db.by_speaker.values())) // 2
    while len(nontargets) < min(n_non, max_pairs):
        i, j = (int(x) for x in rng.integers(len(spk), size=2))
        if spk[i] != spk[j]:
            nontargets.add((0, min(i, j), max(i, j)))
    return targets + sorted(nontargets)


@dataclass
class EvalResult:
    eer: float
    threshold: float
    min_dcf_01: float
    min_dcf_05: float
    trials: int
    targets: int

    def as_dict(self) -> dict[str, float]:
        return {
            "eer": self.eer,
            "threshold": self.threshold,
            "min_dcf_01": self.min_dcf_01,
            "min_dcf_05": self.min_dcf_05,
            "trials": self.trials,
            "targets": self.targets,
        }


def score_trials(
    emb: np.ndarray, trials: list[tuple[int, int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(trials)
    scores = np.sum(emb[t[:, 1]] * emb[t[:, 2]], axis=1)
    return scores, t[:, 0]


def summarize(scores: np.ndarray, labels: np.ndarray) -> EvalResult:
    rate, thr = eer(scores, labels)
    return EvalResult(
        rate,
        thr,
        min_dcf(scores, labels, 0.01)[0],
        min_dcf(scores, labels, 0.05)[0],
        len(labels),
        int(np.sum(labels)),
    )


class HeldOutEval:
    """The held-out speakers' utterances with their features, and a fixed trial list."""

    def __init__(
        self,
        db: SpeakerDatabase,
        source: FeatureSource,
        frames: int,
        n_trials: int = 2000,
        seed: int = 0,
    ) -> None:
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
        emb = embed_features(self.features, embed, self.frames)
        return summarize(*score_trials(emb, self.trials))
