"""A calibration carried to a new domain from unlabelled recordings. NumPy only.

Pairs of a domain's recordings are mostly different speakers, but not all: with ``S``
speakers about ``1 / S`` of random pairs are the same speaker, and they sit in the upper
tail a ``--far`` threshold is read from. The non-target side of the calibration (step 1 of
``learner.scoring.calibration``: the non-target mean and spread at each duration and the
tail of their ``z``) is re-estimated on the pairs, each weighted by how likely it is to be
a non-target, with the same function the labelled fit uses (weights 0 or 1 there):

- first every pair is taken as a non-target, and the source calibration's LLR is read
  through that profile;
- the share ``pi`` of same-speaker pairs is the fixed point of EM for a mixing weight with
  a known likelihood ratio: each pair's posterior ``pi e^llr / (1 - pi + pi e^llr)``,
  ``pi`` their mean;
- the profile is fitted once more, each pair weighted by its posterior of being a
  non-target.

One pass, not more: iterating (a lower non-target mean makes more pairs look like the same
speaker, which lowers the mean again) ran away on real data (bench/adapt.py, docs/
adaptation.md, where the alternatives measured are listed). Where the estimated share
exceeds :data:`MAX_SHARE` the run's LLR is not telling the domain's speakers apart and the
correction is left off: every pair counts as a non-target, which errs on the side of fewer
false accepts than asked.

What the unlabelled pairs cannot tell, the source calibration keeps: the LLR's slope in
``z`` and its duration terms, the EER point in ``z`` and the bounds on the LLR.

    cal, share = adapt_calibration(source_cal, scores, q, fitted_on="412 recordings of x/")
"""

from __future__ import annotations

import dataclasses

import numpy as np

from learner.scoring.calibration import Calibration, nontarget_profile

# More same-speaker pairs than this (fewer than 5 equally recorded speakers) is not a
# domain of many speakers but a likelihood ratio that does not transfer: no correction.
MAX_SHARE = 0.2


def target_share(
    llr: np.ndarray, start: float = 0.05, steps: int = 200
) -> tuple[float, np.ndarray]:
    """EM for the share of same-speaker pairs given each pair's LLR: ``(share, posterior
    of same speaker per pair)``."""
    lr = np.exp(np.clip(llr, -50, 50))
    pi = start
    for _ in range(steps):
        post = pi * lr / (1 - pi + pi * lr)
        new = float(post.mean())
        if abs(new - pi) < 1e-7:
            break
        pi = new
    return pi, post


def adapt_calibration(
    source: Calibration, scores, q, fitted_on: str = ""
) -> tuple[Calibration, float]:
    """``source`` with its non-target profile re-estimated on unlabelled pairs (``scores``
    and quality ``q`` of random pairs of the domain's recordings). Returns the domain's
    calibration and the estimated share of same-speaker pairs (0 where the correction was
    left off: see :data:`MAX_SHARE`)."""
    s = np.asarray(scores, np.float64)
    q = np.asarray(q, np.float64)
    quality = source.quality and np.ptp(q) > 0
    q = q if quality else np.zeros_like(s)

    def carried(w: np.ndarray) -> Calibration:
        knots, mean, spread, z_tail = nontarget_profile(s, q, w, quality)
        return dataclasses.replace(
            source,
            quality=bool(quality),
            norm=[[float(k) for k in knots], mean, spread],
            nontarget_z=z_tail,
            q_range=[float(q.min()), float(q.max())] if quality else source.q_range,
            fitted_on=fitted_on,
            report={},
        )

    every = carried(np.ones_like(s))  # every pair taken as a non-target
    share, post = target_share(every.raw_llr(s, q if quality else None))
    cal = carried(1.0 - post) if share <= MAX_SHARE else every
    cal.report = {
        "pairs": int(len(s)),
        "target_share": share,
        "corrected": bool(share <= MAX_SHARE),
    }
    return cal, share if share <= MAX_SHARE else 0.0
