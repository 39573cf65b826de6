"""Scoring verification trials: cosine scores, AS-Norm, EER, minDCF and the threshold at EER.
NumPy only. The learner's held-out evaluation and ``learner.evaluate`` both score here.

    scores, labels = score_trials(emb, trials)         # emb: [N, D] unit vectors
    result = summarize(scores, labels)                 # EvalResult: eer, threshold, minDCF
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def error_rates(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates for every threshold (decision: score >= threshold).

    Returns ``(thresholds, p_miss, p_fa)``, thresholds ascending, one per distinct
    score plus one above the highest.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_tar, n_non = labels.sum(), (~labels).sum()
    if n_tar == 0 or n_non == 0:
        raise ValueError(f"need target and non-target trials, got {n_tar} and {n_non}")
    order = np.argsort(scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    # Rates when the threshold sits at each sorted score: everything below is rejected.
    tar_below = np.concatenate([[0], np.cumsum(lab)])
    non_below = np.concatenate([[0], np.cumsum(~lab)])
    # Keep only the first position of each run of equal scores (ties move together).
    first = np.concatenate([[True], s[1:] != s[:-1], [True]])
    thresholds = np.concatenate([s, [s[-1] + 1e-6]])[first]
    p_miss = (tar_below / n_tar)[first]
    p_fa = 1.0 - (non_below / n_non)[first]
    return thresholds, p_miss, p_fa


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and the threshold where miss and false-alarm rates cross."""
    thr, p_miss, p_fa = error_rates(scores, labels)
    i = int(np.argmin(np.abs(p_miss - p_fa)))
    return float((p_miss[i] + p_fa[i]) / 2), float(thr[i])


def min_dcf(
    scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """Normalised minimum detection cost and its threshold (NIST SRE definition)."""
    thr, p_miss, p_fa = error_rates(scores, labels)
    dcf = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    default = min(c_miss * p_target, c_fa * (1 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i] / default), float(thr[i])


@dataclass
class EvalResult:
    eer: float
    threshold: float
    min_dcf_01: float
    min_dcf_05: float
    trials: int
    targets: int
    eer_low: float | None = None  # 95% interval of the EER, bootstrap over speakers
    eer_high: float | None = None
    # Calibration (learner.scoring.calibration.calibration_report), when computed: on the
    # trials with test sides cut to 2 s and 1 s in turn.
    cllr: float | None = None
    min_cllr: float | None = None
    act_dcf_01: float | None = None
    min_dcf_01_cut: float | None = None
    fa_at_threshold: float | None = None
    miss_at_threshold: float | None = None
    asnorm_eer: float | None = None
    asnorm_min_dcf_01: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def score_trials(
    emb: np.ndarray, trials: list[tuple[int, int, int]] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of ``(label, i, j)`` trials over unit-norm rows of ``emb``, and labels."""
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


def bootstrap_eer(
    scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, n: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the EER when the speakers themselves are a sample: resample the
    speakers (``groups``: the enrolment side's speaker of each trial) with replacement, take
    all their trials, ``n`` times."""
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(groups, return_inverse=True)
    rows = [np.flatnonzero(inverse == k) for k in range(len(names))]
    values = []
    for _ in range(n):
        picked = np.concatenate([rows[k] for k in rng.integers(len(names), size=len(names))])
        lab = labels[picked]
        if lab.min() == lab.max():
            continue  # a draw with only one kind of trial has no EER
        values.append(eer(scores[picked], lab)[0])
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def as_norm(
    scores: np.ndarray, emb: np.ndarray, trials, cohort: np.ndarray, top: int = 100
) -> np.ndarray:
    """Adaptive symmetric score normalisation against the top-``top`` cohort scores."""
    top = min(top, len(cohort))
    sims = np.sort(emb @ cohort.T, axis=1)[:, -top:]
    mu, sd = sims.mean(axis=1), sims.std(axis=1) + 1e-9
    i, j = np.asarray(trials)[:, 1], np.asarray(trials)[:, 2]
    return 0.5 * ((scores - mu[i]) / sd[i] + (scores - mu[j]) / sd[j])
