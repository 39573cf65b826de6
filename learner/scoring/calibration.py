"""Calibrated scores: cosine -> log-likelihood ratio, with the shorter input's duration as a
quality measure, and the decisions made on them. NumPy and scikit-learn only.

A cosine is not a probability, and short inputs score differently from long ones. Fitted
on labelled trials (the run's held-out speakers at each evaluation, or a user's own
recordings with ``python -m learner.calibrate``), a :class:`Calibration` maps a trial's
score ``s`` and quality ``q`` (the log of the shorter input's seconds of speech) in two
steps, each a well-kept estimator:

1. **Quality normalisation** (``z``): the non-target scores' mean and spread at a few
   knots of ``q`` (quantiles of the fitting trials' ``q``; each non-target counted at its
   nearest knot), interpolated between them, and ``z = (s - mean(q)) / spread(q)``. The
   ``--far`` threshold is interpolated the same way from each knot's own non-target ``z``
   quantiles, so the tail's shape may change with duration too: a false-accept rate is
   then the same share of non-targets at every duration.
2. **Linear logistic calibration** (BOSARIS's, with scikit-learn's ``LogisticRegression``
   and prior weighting): ``llr = a*z + b*q + c*z*q + d``, the offset moved by the prior's
   log-odds so the output is a likelihood ratio, not a posterior at the fitting prior.

LLRs are bounded by the evidence (:meth:`Calibration.llr_bounds`): never above the
largest LLR of the fitting trials nor above ``log(non-targets + 1)`` (a score above all
``N`` non-target trials shows a false-accept rate no lower than about ``1 / N``, so odds
of ``N`` to 1 at most), and never below the smallest nor below ``-log(targets + 1)``.

Decisions (:meth:`Calibration.decide`): ``prior`` (the default, at 0.5: the Bayes
decision at that target prior, accept when the LLR reaches ``-logit(prior)``), ``eer``
(the EER point of the calibration trials) or ``far`` (false accepts at that rate on the
calibration non-targets). Each decision reports its LLR and the probability of the same
speaker at the prior for which its threshold is the Bayes decision (the prior given for
``prior``; for ``eer`` and ``far`` the prior their threshold implies), so the decision and
the probability never point opposite ways: SAME exactly when P(same) >= 0.5.

    cal = fit_calibration(scores, labels, log_duration, fitted_on="held-out speakers")
    cal.llr(0.62, np.log(2.0))
    cal.decide(0.62, np.log(2.0), "far", 0.01)
    cllr(llrs, labels), min_cllr(scores, labels), act_dcf(llrs, labels, 0.01)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from learner.scoring.scores import eer as eer_of

QUANTILES = 1001  # per knot, the non-target z distribution kept for --far lookups
RULES = ("eer", "far", "prior")
MIN_SECONDS, MAX_SECONDS = 0.25, 600.0  # the quality measure's sane range


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def log_duration(seconds_a, seconds_b) -> np.ndarray:
    """The quality measure of a trial: the log of the shorter input's seconds of speech."""
    shorter = np.minimum(np.asarray(seconds_a, np.float64), np.asarray(seconds_b, np.float64))
    return np.log(np.clip(shorter, MIN_SECONDS, MAX_SECONDS))


@dataclass
class Calibration:
    """A fitted score calibration; JSON-able (:meth:`as_dict`), stored in checkpoints."""

    kind: str  # the scores it maps: "cosine" or "asnorm"
    quality: bool  # whether the duration measure is used
    norm: list[list[float]]  # [q knots, non-target mean, non-target log-spread] at them
    weights: list[float]  # llr = w[0]*z + w[1]*q + w[2]*z*q + bias
    bias: float
    q_range: list[float]  # the quality measure seen in fitting (inputs are clipped to it)
    eer_z: float  # the EER point's threshold on z
    nontarget_z: list[list[float]]  # per knot: quantiles of its non-targets' z
    prior: float = 0.5
    trials: int = 0
    targets: int = 0
    fitted_on: str = ""
    report: dict[str, float] = field(default_factory=dict)  # Cllr etc. on the fitting trials
    llr_range: list[float] = field(default_factory=list)  # [] before the bounds were stored

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "calibration") -> Calibration:
        """A stored calibration, every field a decision reads checked (a file can be edited:
        ``eer_z = -1e300`` would make every pair the same speaker); a ValueError names the
        field (``name.field``)."""
        if not isinstance(d, dict):
            raise ValueError(f"{name}: not a calibration (a JSON object)")
        try:
            cal = cls(**d)
        except TypeError as exc:
            raise ValueError(f"{name}: not a calibration: {exc}") from None
        cal.check(name)
        return cal

    def check(self, name: str = "calibration") -> None:
        """Refuse values no fit writes: not finite, out of range, inconsistent lengths."""

        def numbers(key: str, value, limit: float, length: int | None = None) -> list[float]:
            ok = isinstance(value, list) and (length is None or len(value) == length)
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if ok and all(math.isfinite(v) and abs(v) <= limit for v in value):
                return [float(v) for v in value]
            want = f"{length} " if length else ""
            raise ValueError(
                f"{name}.{key}: {str(value)[:80]} is not {want}finite numbers within +-{limit:g}"
            )

        def number(key: str, value, limit: float) -> float:
            return numbers(key, [value], limit)[0]

        if self.kind not in ("cosine", "asnorm"):
            raise ValueError(f"{name}.kind: {self.kind!r} is not cosine or asnorm")
        if not isinstance(self.quality, bool):
            raise ValueError(f"{name}.quality: {self.quality!r} is not true or false")
        if not (isinstance(self.norm, list) and len(self.norm) == 3):
            raise ValueError(f"{name}.norm: not three lists (knots, mean, log-spread)")
        knots = numbers("norm", self.norm[0], 20)
        numbers("norm", self.norm[1], 1e3, len(knots))
        numbers("norm", self.norm[2], 20, len(knots))
        if not knots or any(b <= a for a, b in zip(knots, knots[1:], strict=False)):
            raise ValueError(f"{name}.norm: its knots must rise")
        w = numbers("weights", self.weights, 1e3, 3)
        number("bias", self.bias, 1e3)
        lo, hi = numbers("q_range", self.q_range, 20, 2)
        if lo > hi:
            raise ValueError(f"{name}.q_range: {self.q_range} is not low, high")
        if min(w[0] + w[2] * q for q in ((lo, hi) if self.quality else (0.0,))) <= 0:
            raise ValueError(f"{name}.weights: {w} do not make a higher score raise the LLR")
        number("eer_z", self.eer_z, 100)
        if not (isinstance(self.nontarget_z, list) and len(self.nontarget_z) == len(knots)):
            raise ValueError(f"{name}.nontarget_z: not one list per knot")
        for z in self.nontarget_z:
            z = numbers("nontarget_z", z, 1e3)
            if len(z) < 2 or any(b < a for a, b in zip(z, z[1:], strict=False)):
                raise ValueError(f"{name}.nontarget_z: quantiles must be two or more, rising")
        if not 0 < number("prior", self.prior, 1) < 1:
            raise ValueError(f"{name}.prior: {self.prior} is not between 0 and 1")
        for count in ("trials", "targets"):
            v = getattr(self, count)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}.{count}: {v!r} is not a count")
        if self.targets > self.trials:
            raise ValueError(
                f"{name}.targets: {self.targets} is more than its {self.trials} trials"
            )
        if self.llr_range:
            low, high = numbers("llr_range", self.llr_range, 50, 2)
            if not low < 0 < high:
                raise ValueError(f"{name}.llr_range: {self.llr_range} is not low < 0 < high")

    def llr_bounds(self) -> tuple[float, float]:
        """The most extreme LLRs the fitting trials support (a calibration written before
        the bounds were stored: the bounds from its trial counts alone)."""
        if self.llr_range:
            return float(self.llr_range[0]), float(self.llr_range[1])
        return -math.log(self.targets + 1), math.log(self.trials - self.targets + 1)

    def smallest_far(self) -> float:
        """The smallest false-accept rate the non-target trials can show: one of them (0 for
        a calibration that did not store its counts)."""
        non = self.trials - self.targets
        return 1.0 / non if non > 0 else 0.0

    def seconds_range(self) -> tuple[float, float]:
        """The shorter input's seconds of speech the calibration was fitted on."""
        return math.exp(self.q_range[0]), math.exp(self.q_range[1])

    def _q(self, q) -> np.ndarray:
        q = np.asarray(0.0 if q is None else q, np.float64)
        return np.clip(q, *self.q_range) if self.quality else np.zeros_like(q)

    def z(self, scores, q=None) -> np.ndarray:
        q = self._q(q)
        knots, mean, spread = self.norm
        return (np.asarray(scores, np.float64) - np.interp(q, knots, mean)) / np.exp(
            np.interp(q, knots, spread)
        )

    def llr(self, scores, q=None) -> np.ndarray:
        """LLRs, bounded by :meth:`llr_bounds`."""
        return np.clip(self.raw_llr(scores, q), *self.llr_bounds())

    def raw_llr(self, scores, q=None) -> np.ndarray:
        z, q = self.z(scores, q), self._q(q)
        w = self.weights
        return w[0] * z + w[1] * q + w[2] * z * q + self.bias

    def far_threshold(self, far: float, q: float | None = None) -> float:
        """The z above which ``far`` of the calibration non-targets of quality ``q`` lie."""
        if not 0 < far < 1:
            raise ValueError(f"--far must be between 0 and 1, got {far}")
        smallest = self.smallest_far()
        if far < smallest:
            raise ValueError(
                f"--far {far:g} is below what the calibration can show: its "
                f"{self.trials - self.targets:,} non-target trials support rates from "
                f"{smallest:.2g}; give --far {smallest:.2g} or more, or calibrate on more trials"
            )
        grid = np.linspace(0, 1, len(self.nontarget_z[0]))
        at_knots = [np.interp(1 - far, grid, z) for z in self.nontarget_z]
        return float(np.interp(float(self._q(q)), self.norm[0], at_knots))

    def threshold(self, rule: str = "eer", value: float = 0.0, q: float | None = None) -> float:
        """The score a trial of quality ``q`` must reach under ``rule``: ``eer`` (the EER
        point of the calibration trials), ``far`` (``value``: the false-accept rate on the
        calibration non-targets, the same share at every duration) or ``prior`` (``value``:
        the target prior; the Bayes decision, LLR >= -logit(prior))."""
        if rule not in RULES:
            raise ValueError(f"rule {rule!r}: one of {', '.join(RULES)}")
        qq = float(self._q(q))
        knots, mean, spread = self.norm
        if rule == "prior":
            if not 0 < value < 1:
                raise ValueError(f"--prior must be between 0 and 1, got {value}")
            w = self.weights
            slope = w[0] + w[2] * qq
            if slope <= 0:
                raise ValueError("the calibration is degenerate (scores do not raise the LLR)")
            z = (-logit(value) - w[1] * qq - self.bias) / slope
        elif rule == "far":
            z = self.far_threshold(value, qq)
        else:
            z = self.eer_z
        return float(np.interp(qq, knots, mean) + z * math.exp(np.interp(qq, knots, spread)))

    def decide(
        self, score: float, q: float | None, rule: str = "prior", value: float = 0.5
    ) -> dict:
        """One trial's decision under ``rule`` (:meth:`threshold`), its bounded LLR and the
        probability of the same speaker at ``at_prior``: the prior at which the rule's
        threshold is the Bayes decision (``value`` for ``prior``). ``same_speaker`` holds
        exactly when ``p_same >= 0.5``."""
        lo, hi = self.llr_bounds()
        llr = float(self.llr(score, q))
        threshold = self.threshold(rule, value, q)
        if rule == "prior":
            cut = -logit(value)
            same = llr >= cut
            if not lo <= cut <= hi:  # beyond what the evidence supports: no score reaches it
                threshold = math.inf if cut > hi else -math.inf
        else:
            cut = float(self.llr(threshold, q))
            same = score >= threshold
            if same and llr < cut or not same and llr > cut:  # float ties at the bound
                cut = llr
        at_prior = 1 / (1 + math.exp(cut))
        where = self.fitted_on or "the calibration trials"
        text = {
            "eer": f"the equal-error-rate point of {where}",
            "far": f"false accepts at {100 * value:g}% of {where}",
            "prior": f"the Bayes decision at target prior {value:g}, calibrated on {where}",
        }[rule]
        if rule != "prior":
            text += f" (the Bayes decision at target prior {at_prior:.3g})"
        # Printed to 4 places, rounded towards the decision: an LLR a hair below the cut
        # must not print 0.5000 beside DIFFERENT.
        p_same = round(1 / (1 + math.exp(-(llr - cut))), 4)
        p_same = max(p_same, 0.5) if same else min(p_same, 0.4999)
        return {
            "llr": round(llr, 4),
            "p_same": p_same,
            "at_prior": round(at_prior, 4),
            "same_speaker": bool(same),
            "threshold": threshold if math.isinf(threshold) else round(threshold, 4),
            "rule": "eer" if rule == "eer" else f"{rule}={value:g}",
            "rule_text": text,
            "llr_bounded": bool(self.raw_llr(score, q) != llr),
        }

    def duration_note(self, q: float | None) -> str | None:
        """``shorter`` or ``longer`` when the trial's shorter input lies outside the
        durations the calibration was fitted on (its LLR is then bounded), else None."""
        if q is None or not self.quality:
            return None
        if q < self.q_range[0] - 1e-9:
            return "shorter"
        return "longer" if q > self.q_range[1] + 1e-9 else None


def _knots(q: np.ndarray, most: int = 6, least_each: int = 100) -> np.ndarray:
    """Up to ``most`` knots at quantiles of ``q`` with ``least_each`` points nearest each."""
    for k in range(min(most, len(np.unique(q))), 1, -1):
        knots = np.unique(np.round(np.quantile(q, (np.arange(k) + 0.5) / k), 6))
        nearest = np.abs(q[:, None] - knots[None]).argmin(axis=1)
        if len(knots) > 1 and np.bincount(nearest, minlength=len(knots)).min() >= least_each:
            return knots
    return np.array([float(np.median(q))])


def weighted_quantiles(x: np.ndarray, w: np.ndarray, p) -> np.ndarray:
    """Quantiles ``p`` of ``x`` with weights ``w`` (the inverted CDF; equal weights give
    NumPy's own ``inverted_cdf``)."""
    return np.quantile(x, p, weights=w, method="inverted_cdf")


def nontarget_profile(s: np.ndarray, q: np.ndarray, w: np.ndarray, quality: bool):
    """The quality normalisation of step 1, from scores weighted by how much each is a
    non-target (``w``: 1 or 0 with labels; the posterior of a non-target without them,
    ``learner.scoring.unlabelled``): knots of ``q``, the non-targets' weighted mean and log
    spread at each, and each knot's ``QUANTILES`` quantiles of its non-targets' ``z``."""
    keep = w > 0
    knots = _knots(q[keep]) if quality else np.zeros(1)
    nearest = np.abs(q[:, None] - knots[None]).argmin(axis=1)
    mean, spread = [], []
    for k in range(len(knots)):
        at = nearest == k
        m = float(np.average(s[at], weights=w[at]))
        mean.append(m)
        spread.append(float(np.log(np.sqrt(np.average((s[at] - m) ** 2, weights=w[at])) + 1e-9)))
    z = (s - np.interp(q, knots, mean)) / np.exp(np.interp(q, knots, spread))
    grid = np.linspace(0, 1, QUANTILES)
    quantiles = [
        [round(float(v), 5) for v in weighted_quantiles(z[at], w[at], grid)]
        for at in (nearest == k for k in range(len(knots)))
    ]
    return knots, mean, spread, quantiles


def fit_calibration(
    scores,
    labels,
    q=None,
    prior: float = 0.5,
    kind: str = "cosine",
    fitted_on: str = "",
) -> Calibration:
    """Fit on trials: ``scores``, ``labels`` (1 target), ``q`` (:func:`log_duration`; None:
    no quality measure). ``prior``: the target prior the logistic regression weights the
    two classes to (BOSARIS's prior weighting); the result is an LLR whatever it is."""
    from sklearn.linear_model import LogisticRegression

    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_tar, n_non = int(y.sum()), int((~y).sum())
    if n_tar < 2 or n_non < 2:
        raise ValueError(f"calibration needs target and non-target trials, got {n_tar} and {n_non}")
    quality = q is not None and np.ptp(np.asarray(q, np.float64)) > 0
    q = np.asarray(q, np.float64) if quality else np.zeros_like(s)
    non = ~y
    knots, mean, spread, nontarget_z = nontarget_profile(s, q, non.astype(np.float64), quality)
    z = (s - np.interp(q, knots, mean)) / np.exp(np.interp(q, knots, spread))
    weight = np.where(y, prior / n_tar, (1 - prior) / n_non)
    weight *= len(y) / weight.sum()
    # Higher scores must mean more evidence at every duration seen: if a fit says
    # otherwise (a model that has not learned yet), fewer terms; none at all, an LLR of 0.
    coef, bias = [1e-6, 0.0, 0.0], logit(prior)
    for terms in ([z, q, z * q], [z, q], [z]) if quality else ([z],):
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(np.column_stack(terms), y, sample_weight=weight)
        w = [float(c) for c in model.coef_[0]] + [0.0] * (3 - len(terms))
        if min(w[0] + w[2] * q.min(), w[0] + w[2] * q.max()) > 0:
            coef, bias = w, float(model.intercept_[0])
            break
    cal = Calibration(
        kind=kind,
        quality=bool(quality),
        norm=[[float(k) for k in knots], mean, spread],
        weights=coef,
        bias=bias - logit(prior),
        q_range=[float(q.min()), float(q.max())],
        eer_z=eer_of(z, y)[1],
        nontarget_z=nontarget_z,
        prior=prior,
        trials=len(y),
        targets=n_tar,
        fitted_on=fitted_on,
    )
    raw = cal.raw_llr(s, q if quality else None)
    cal.llr_range = [
        float(max(raw.min(), -math.log(n_tar + 1))),
        float(min(raw.max(), math.log(n_non + 1))),
    ]
    llr = cal.llr(s, q if quality else None)
    cal.report = {
        "cllr": cllr(llr, y),
        "min_cllr": min_cllr(s if not quality else llr, y),
        "act_dcf_01": act_dcf(llr, y, 0.01),
    }
    return cal


# Calibration trials' test sides: full length, then cut to 2 s, 1 s and 0.5 s (the
# shortest speech the commands accept, workers.quality.QualityLimits.min_speech_s).
CUTS = (2.0, 1.0, 0.5)


def cut_frames(frames: int, hop_s: float) -> list[int]:
    """The frames of each version of an utterance of ``frames`` frames: whole, then cut to
    each of ``CUTS`` seconds (no longer than it is)."""
    return [frames] + [min(frames, max(1, round(cut / hop_s))) for cut in CUTS]


def with_cuts(trials, n_items: int, cuts: int = len(CUTS)) -> np.ndarray:
    """``trials`` (``label, i, j``) with the test side of trial ``k`` taken from version
    ``k % (cuts + 1)`` of its utterance (0: full, then each cut), for embeddings stacked as
    ``[full; cut 1; cut 2; ...]`` (``n_items`` rows each)."""
    t = np.array(trials, dtype=np.int64).reshape(-1, 3)
    t[:, 2] += n_items * (np.arange(len(t)) % (cuts + 1))
    return t


def cross_fitted_llr(scores, labels, q, groups) -> np.ndarray:
    """LLRs of each trial from a calibration fitted on the other half of the speakers
    (``groups``: the enrolment side's speaker), both ways round: an honest Cllr of the
    calibration on speakers it was not fitted on."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    names = np.unique(groups)
    half = np.isin(groups, names[::2])
    out = np.full(len(s), np.nan)
    for fit_on in (half, ~half):
        if min(y[fit_on].sum(), (~y[fit_on]).sum(), (~fit_on).sum()) < 2:
            return fit_calibration(s, y, q).llr(s, q)  # too few speakers to split
        cal = fit_calibration(s[fit_on], y[fit_on], None if q is None else q[fit_on])
        out[~fit_on] = cal.llr(s[~fit_on], None if q is None else q[~fit_on])
    return out


def calibration_report(scores, labels, q, groups, threshold: float | None = None) -> dict:
    """Cllr (cross-fitted over speakers), minCllr, actual DCF next to minDCF at 0.01, and
    the false-accept and miss rates at ``threshold`` (the stored cosine threshold)."""
    from learner.scoring.scores import min_dcf

    y = np.asarray(labels).astype(bool)
    llr = cross_fitted_llr(scores, y, q, groups)
    out = {
        "cllr": cllr(llr, y),
        "min_cllr": min_cllr(scores, y),
        "act_dcf_01": act_dcf(llr, y, 0.01),
        "min_dcf_01_cut": min_dcf(scores, y, 0.01)[0],
    }
    if threshold is not None:
        out["fa_at_threshold"], out["miss_at_threshold"] = rates_at(scores, y, threshold)
    return out


def cllr(llr, labels) -> float:
    """The log-likelihood-ratio cost (bits): 1 for a system that always says 0, 0 for a
    perfect one; what calibration adds to it is ``cllr - min_cllr``."""
    llr = np.asarray(llr, np.float64)
    y = np.asarray(labels).astype(bool)
    tar = np.mean(np.logaddexp(0, -llr[y])) if y.any() else 0.0
    non = np.mean(np.logaddexp(0, llr[~y])) if (~y).any() else 0.0
    return float((tar + non) / (2 * math.log(2)))


def min_cllr(scores, labels) -> float:
    """Cllr after the best monotonic mapping of the scores (pool-adjacent-violators, with
    scikit-learn's isotonic regression): the discrimination part of Cllr."""
    from sklearn.isotonic import IsotonicRegression

    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    posterior = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit_transform(s, y)
    base = logit(y.mean())
    with np.errstate(divide="ignore"):
        llr = np.log(posterior) - np.log1p(-posterior) - base
    return cllr(llr, y)


def act_dcf(llr, labels, p_target: float = 0.01) -> float:
    """Normalised actual detection cost of Bayes decisions on ``llr`` at ``p_target`` (equal
    costs): what the decisions cost, where minDCF is what the best threshold would."""
    llr = np.asarray(llr, np.float64)
    y = np.asarray(labels).astype(bool)
    threshold = -logit(p_target)
    p_miss = float(np.mean(llr[y] < threshold))
    p_fa = float(np.mean(llr[~y] >= threshold))
    return (p_target * p_miss + (1 - p_target) * p_fa) / min(p_target, 1 - p_target)


def rates_at(scores, labels, threshold: float) -> tuple[float, float]:
    """``(false-accept rate, miss rate)`` when accepting ``score >= threshold``."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    return float(np.mean(s[~y] >= threshold)), float(np.mean(s[y] < threshold))
