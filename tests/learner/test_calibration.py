"""Score calibration (learner.scoring.calibration): known answers on constructed scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from learner.scoring.calibration import (
    Calibration,
    act_dcf,
    cllr,
    cross_fitted_llr,
    fit_calibration,
    log_duration,
    min_cllr,
    rates_at,
    with_cuts,
)


def gaussian_trials(n: int, mu: float, sd: float, p_target: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < p_target
    return np.where(y, rng.normal(mu, sd, n), rng.normal(-mu, sd, n)), y


def test_fit_recovers_the_known_llr_slope_and_offset():
    # Target N(m_t, s), non-target N(m_n, s): the true LLR is linear in the score,
    # slope (m_t - m_n) / s^2 and offset -(m_t^2 - m_n^2) / (2 s^2).
    rng = np.random.default_rng(1)
    n, m_t, m_n, s = 40000, 0.7, 0.1, 0.2
    y = rng.random(n) < 0.2  # the class balance must not move the LLR (prior weighting)
    scores = np.where(y, rng.normal(m_t, s, n), rng.normal(m_n, s, n))
    cal = fit_calibration(scores, y)
    slope, offset = (m_t - m_n) / s**2, -(m_t**2 - m_n**2) / (2 * s**2)
    got = cal.llr(np.array([0.0, 1.0]))
    assert got[1] - got[0] == pytest.approx(slope, rel=0.05)
    assert got[0] == pytest.approx(offset, abs=0.15)
    # A fit at another prior weighting is the same LLR (the prior's log-odds removed).
    again = fit_calibration(scores, y, prior=0.05).llr(np.array([0.0, 1.0]))
    np.testing.assert_allclose(again, got, atol=0.2)
    # JSON round trip.
    back = Calibration.from_dict(cal.as_dict())
    np.testing.assert_allclose(back.llr(scores[:10]), cal.llr(scores[:10]))


def test_far_threshold_gives_the_asked_false_accept_rate():
    scores, y = gaussian_trials(20000, 1.0, 1.0, seed=2)
    cal = fit_calibration(scores, y)
    for far in (0.01, 0.05, 0.2):
        t = cal.threshold("far", far)
        fa, _ = rates_at(scores, y, t)
        assert fa == pytest.approx(far, abs=0.003), far
    # The Bayes rule: the threshold sits where the LLR equals -logit(prior).
    t = cal.threshold("prior", 0.05)
    assert float(cal.llr(t)) == pytest.approx(math.log(0.95 / 0.05), abs=1e-6)
    d = cal.decide(t + 0.01, None, "prior", 0.05)
    assert d["same_speaker"] and d["p_same"] > 0.5 and d["rule"] == "prior=0.05"
    with pytest.raises(ValueError):
        cal.threshold("far", 1.5)


def test_the_duration_measure_keeps_false_accepts_level_across_durations():
    # Short inputs spread their non-target scores wider: one score threshold lets many more
    # of them through; the duration-aware threshold keeps the rate at every duration.
    rng = np.random.default_rng(3)
    n = 30000
    y = rng.random(n) < 0.3
    seconds = rng.choice([1.0, 2.0, 8.0], n)
    spread = 0.05 + 0.15 / seconds
    scores = np.where(y, rng.normal(0.6, spread), rng.normal(0.0, spread))
    q = log_duration(seconds, np.full(n, 20.0))
    with_q, without = fit_calibration(scores, y, q), fit_calibration(scores, y)
    fa_with, fa_without = [], []
    for d in (1.0, 2.0, 8.0):
        m = seconds == d
        t = np.array([with_q.threshold("far", 0.05, x) for x in q[m]])
        fa_with.append(np.mean(scores[m][~y[m]] >= t[~y[m]]))
        fa_without.append(rates_at(scores[m], y[m], without.threshold("far", 0.05))[0])
    assert max(abs(f - 0.05) for f in fa_with) < 0.02, fa_with
    assert max(abs(f - 0.05) for f in fa_without) > 0.04, fa_without


def test_cllr_of_perfectly_calibrated_scores_is_the_theoretical_value():
    # Calibrated Gaussian LLRs: targets N(m, 2m), non-targets N(-m, 2m).
    m = 2.0
    rng = np.random.default_rng(4)
    tar, non = rng.normal(m, math.sqrt(2 * m), 200000), rng.normal(-m, math.sqrt(2 * m), 200000)
    llr = np.r_[tar, non]
    y = np.r_[np.ones(len(tar), bool), np.zeros(len(non), bool)]
    pdf = stats.norm(m, math.sqrt(2 * m)).pdf
    # Both halves are equal by symmetry: E_tar[log2(1 + exp(-llr))].
    theory = integrate.quad(lambda x: pdf(x) * np.logaddexp(0, -x) / math.log(2), -40, 40)[0]
    assert cllr(llr, y) == pytest.approx(theory, abs=0.005)
    assert cllr(np.zeros(10), np.r_[np.ones(5), np.zeros(5)]) == pytest.approx(1.0)
    # Calibrated scores lose (almost) nothing to the best monotonic mapping.
    assert cllr(llr, y) - min_cllr(llr, y) < 0.01
    # Scores shifted by 3 are miscalibrated: Cllr rises, minCllr does not move.
    assert cllr(llr + 3, y) > cllr(llr, y) + 0.1
    assert min_cllr(llr + 3, y) == pytest.approx(min_cllr(llr, y), abs=1e-9)


def test_actual_dcf_and_cross_fitting():
    scores, y = gaussian_trials(20000, 1.0, 1.0, seed=5)
    llr = 2.0 * scores  # the true LLR of N(1, 1) against N(-1, 1)
    # Bayes decisions on true LLRs cost about the minimum; shifted ones cost more.
    from learner.scoring.scores import min_dcf

    best = min_dcf(scores, y, 0.01)[0]
    assert act_dcf(llr, y, 0.01) == pytest.approx(best, abs=0.08)
    assert act_dcf(llr + 4, y, 0.01) > best + 0.3
    groups = np.arange(len(y)) % 10
    out = cross_fitted_llr(scores, y, None, groups)
    assert np.isfinite(out).all() and cllr(out, y) == pytest.approx(cllr(llr, y), abs=0.02)


def test_with_cuts_takes_test_sides_in_turn():
    t = with_cuts([(1, 0, 1), (0, 0, 2), (1, 1, 2), (0, 1, 0), (1, 2, 0)], n_items=3)
    # full, 2 s, 1 s, 0.5 s, then full again
    assert t.tolist() == [[1, 0, 1], [0, 0, 5], [1, 1, 8], [0, 1, 9], [1, 2, 0]]
    assert log_duration(1.0, 5.0) == pytest.approx(0.0)
    assert log_duration(0.01, 5.0) == pytest.approx(math.log(0.25))  # clipped


def skewed_calibration():
    """Trials on which the EER point and the LLR = 0 point lie far apart (few, spread-out
    targets): the old default rule (the EER point, probability at prior 0.5) said SAME
    with P(same) < 0.5 on scores between the two."""
    rng = np.random.default_rng(7)
    n = 20000
    y = rng.random(n) < 0.1
    seconds = rng.choice([0.5, 1.0, 2.0, 6.0], n)
    scores = np.where(y, rng.normal(0.45, 0.2, n), rng.normal(0.0, 0.1, n))
    q = log_duration(seconds, np.full(n, 8.0))
    return fit_calibration(scores, y, q), q


def test_every_rule_agrees_with_its_probability():
    cal, q = skewed_calibration()
    grid = np.linspace(-0.5, 1.2, 341)
    # The old rule's contradiction exists on these trials: between the EER threshold and
    # the LLR = 0 score, the EER point accepts while the LLR says different.
    t_eer = cal.threshold("eer", 0.0, float(q[0]))
    llr_at = cal.llr(t_eer, q[0])
    assert abs(float(llr_at)) > 0.3, "the constructed set must separate the two points"
    for rule, value in (("prior", 0.5), ("prior", 0.05), ("eer", 0.0), ("far", 0.01), ("far", 0.2)):
        for qq in (math.log(0.3), math.log(0.7), math.log(2.0), math.log(30.0)):
            for s in grid:
                d = cal.decide(float(s), qq, rule, value)
                assert d["same_speaker"] == (d["p_same"] >= 0.5), (rule, value, qq, s, d)
                if d["p_same"] != 0.5:
                    assert d["same_speaker"] == (d["p_same"] > 0.5)
    # The EER rule names the prior at which its threshold is the Bayes decision.
    d = cal.decide(t_eer, float(q[0]), "eer", 0.0)
    assert d["at_prior"] == pytest.approx(1 / (1 + math.exp(float(llr_at))), abs=1e-3)
    assert "Bayes decision at target prior" in d["rule_text"]


def test_llrs_are_bounded_by_the_evidence():
    cal, _ = skewed_calibration()
    lo, hi = cal.llr_bounds()
    assert hi <= math.log(cal.trials - cal.targets + 1) + 1e-9
    assert lo >= -math.log(cal.targets + 1) - 1e-9
    # Far outside the scores and the durations seen: never beyond the bound.
    long_q = math.log(500.0)
    assert cal.duration_note(long_q) == "longer"
    assert cal.duration_note(math.log(0.3)) == "shorter"
    assert cal.duration_note(math.log(1.5)) is None
    assert float(cal.llr(5.0, long_q)) == pytest.approx(hi)
    assert float(cal.raw_llr(5.0, long_q)) > hi  # what an unbounded map would claim
    assert float(cal.llr(-5.0, long_q)) == pytest.approx(lo)
    d = cal.decide(5.0, long_q, "prior", 0.5)
    assert d["llr"] == pytest.approx(hi, abs=1e-4) and d["llr_bounded"]
    # A prior beyond the evidence: no score reaches the Bayes threshold.
    d = cal.decide(5.0, long_q, "prior", 1e-9)
    assert not d["same_speaker"] and math.isinf(d["threshold"]) and d["p_same"] < 0.5


def test_a_calibration_written_before_the_bounds_loads_and_bounds_by_its_counts():
    cal, _ = skewed_calibration()
    old = cal.as_dict()
    del old["llr_range"]  # what checkpoints before this change hold
    back = Calibration.from_dict(old)
    lo, hi = back.llr_bounds()
    assert (lo, hi) == (-math.log(cal.targets + 1), math.log(cal.trials - cal.targets + 1))
    # Inside the bounds it maps exactly as before.
    np.testing.assert_allclose(back.llr(0.2, 0.0), cal.raw_llr(0.2, 0.0))


def test_a_probability_rounded_to_four_places_still_points_the_way_of_the_decision():
    # bench/calibration.py found it: an LLR a hair below the Bayes cut printed P(same) 0.5
    # with DIFFERENT (0.4999975 rounds to 0.5), and a program reading p_same >= 0.5 said SAME.
    cal, q = skewed_calibration()
    qq = float(q[0])
    t = cal.threshold("prior", 0.5, qq)
    for eps in (1e-9, 1e-7, 1e-6, 1e-5, 1e-4):
        for s in (t - eps, t + eps):
            d = cal.decide(float(s), qq, "prior", 0.5)
            assert d["same_speaker"] == (d["p_same"] >= 0.5), (s, d)
    t = cal.threshold("far", 0.05, qq)
    for eps in (1e-9, 1e-6, 1e-4):
        for s in (t - eps, t + eps):
            d = cal.decide(float(s), qq, "far", 0.05)
            assert d["same_speaker"] == (d["p_same"] >= 0.5), (s, d)
