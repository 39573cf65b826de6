"""The one calibration pipeline and cohort rule (learner.scoring.pipeline), on constructed
embeddings and a toy embedder: no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from learner.scoring.calibration import CUTS
from learner.scoring.pipeline import (
    cohort_groups,
    cohort_vectors,
    cut_embeddings,
    fit_calibrations,
)
from learner.scoring.trials import parse_trial_lines


def toy_embed(x: np.ndarray) -> np.ndarray:
    """[N, T, M] -> [N, M]: the mean frame, normalised (a deterministic 'network')."""
    m = x.mean(axis=1)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_cut_embeddings_stacks_full_then_each_cut_with_its_seconds():
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, 8)).astype(np.float32) + 3 for n in (300, 120, 40)]
    cuts = cut_embeddings(feats, toy_embed, frames=50, hop_s=0.01)
    versions = 1 + len(CUTS)
    assert cuts.emb.shape == (versions * 3, 8) and cuts.n == 3
    # full lengths, then 2 s, 1 s and 0.5 s, none longer than the utterance
    np.testing.assert_allclose(cuts.secs[:3], [3.0, 1.2, 0.4])
    np.testing.assert_allclose(cuts.secs[3:6], [2.0, 1.2, 0.4])
    np.testing.assert_allclose(cuts.secs[9:12], [0.5, 0.5, 0.4])
    # a given full-length embedding is used as it is
    given = np.eye(8, dtype=np.float32)[:3]
    again = cut_embeddings(feats, toy_embed, 50, 0.01, full=given)
    np.testing.assert_array_equal(again.full, given)
    np.testing.assert_allclose(again.emb[3:], cuts.emb[3:])


def test_the_cohort_rule_is_seeded_capped_and_keeps_order():
    groups = [[10 * k + i for i in range(5)] for k in range(8)]
    chosen = cohort_groups(groups, speakers=3, per_speaker=2, seed=1)
    assert len(chosen) == 3 and all(len(g) == 2 for g in chosen)
    assert chosen == sorted(chosen) and chosen == cohort_groups(groups, 3, 2, seed=1)
    assert chosen != cohort_groups(groups, 3, 2, seed=2)
    # unlabelled recordings: one item a group
    assert cohort_groups([[i] for i in range(4)], speakers=10) == [[0], [1], [2], [3]]
    emb = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    v = cohort_vectors(emb, [[0, 1], [2]])
    np.testing.assert_allclose(v, [[0.7071, 0.7071], [0.7071, 0.7071]], atol=1e-4)


def test_fit_calibrations_fits_cosine_and_asnorm_on_the_cut_trials():
    rng = np.random.default_rng(1)
    speakers, per = 12, 6
    centres = rng.normal(size=(speakers, 16))
    feats, who = [], []
    for s in range(speakers):
        for _ in range(per):
            n = int(rng.integers(60, 400))
            feats.append((centres[s] + 0.8 * rng.normal(size=(n, 16))).astype(np.float32) + 2)
            who.append(s)
    cuts = cut_embeddings(feats, toy_embed, frames=50, hop_s=0.01)
    trials = [
        (int(who[i] == who[j]), i, j) for i in range(len(feats)) for j in range(i + 1, len(feats))
    ]
    groups = [who[i] for _, i, _ in trials]
    cohort = cohort_vectors(cuts.full, [[i] for i in range(len(feats))])
    report, cals = fit_calibrations(cuts.scored(trials, cohort), groups, fitted_on="toy")
    assert set(cals) == {"cosine", "asnorm"} and cals["cosine"].fitted_on == "toy"
    assert cals["cosine"].trials == len(trials) and cals["cosine"].quality
    assert cals["cosine"].seconds_range()[0] == pytest.approx(0.5, abs=1e-6)
    assert 0 < report["cllr"] < 1 and "asnorm_eer" in report
    with pytest.raises(ValueError):
        fit_calibrations(cuts.scored([(0, 0, 7), (0, 1, 8)]), [0, 1])


def test_trial_lists_in_every_format(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("1 a.wav b.wav\nc d nontarget\n\ne.wav f.wav\n")
    with pytest.raises(ValueError, match=r"t.txt:4: expected"):
        parse_trial_lines(f)  # a pair list only where pairs are allowed
    got = parse_trial_lines(f, pairs=True)
    assert got == [(1, "a.wav", "b.wav", 1), (0, "c", "d", 2), (None, "e.wav", "f.wav", 4)]


def test_score_trials_and_as_norm_on_known_vectors():
    from learner.scoring.scores import as_norm, score_trials

    emb = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    scores, labels = score_trials(emb, [(1, 0, 1), (0, 0, 2)])
    np.testing.assert_allclose(scores, [0.6, 0.0], atol=1e-6)
    assert labels.tolist() == [1, 0]
    cohort = np.array([[1, 0], [0, 1], [0.8, 0.6]], np.float32)
    got = as_norm(scores, emb, [(1, 0, 1), (0, 0, 2)], cohort, top=2)

    def stats(v):
        top = np.sort(cohort @ v)[-2:]
        return top.mean(), top.std() + 1e-9

    (m0, s0), (m1, s1), (m2, s2) = (stats(e) for e in emb)
    want = [0.5 * ((0.6 - m0) / s0 + (0.6 - m1) / s1), 0.5 * ((0 - m0) / s0 + (0 - m2) / s2)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
