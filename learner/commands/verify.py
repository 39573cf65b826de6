"""Are two recordings the same speaker? A calibrated decision at the operating point you choose.

Examples:
    python -m learner.verify a.wav b.flac --checkpoint runs/20261124-073721-3f9a
    python -m learner.verify a.wav b.wav -c runs/x --far 0.01          # 1% false accepts
    python -m learner.verify a.wav b.wav -c runs/x --prior 0.05 --json  # Bayes at prior 5%
    python -m learner.verify a.wav b.wav -c runs/x --asnorm             # with the stored cohort

The cosine score of the two embeddings is mapped to a log-likelihood ratio (LLR) by the
checkpoint's calibration, fitted on held-out speakers at the end of training (or on your
own recordings: python -m learner.calibrate), with the shorter input's seconds of speech
as a quality measure: short inputs score differently, and the decision accounts for it.

Operating points (one of):
  (default)     the equal-error-rate point of the calibration trials
  --far F       false accepts at rate F on the calibration trials, at every duration
  --prior P     the Bayes decision at target prior P (accept when LLR >= -logit(P))
  --threshold T a raw cosine threshold, no calibration

The output gives the LLR, the probability of the same speaker at the prior (0.5 unless
--prior), the rule that decided and the score it compared. A checkpoint from before
calibration decides on its cosine threshold as it always did (--far and --prior need a
calibration: run python -m learner.calibrate). Inputs that are not speech (silence,
noise, a tone, music) or have too little of it are refused (exit 2; see --min-speech).

Exit code: 0 same speaker, 1 different speakers, 2 error (unreadable file, not
speech, bad checkpoint).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from learner.commands.cli import guarded, load_model, parser
from learner.commands.speaker_model import SpeakerModel
from learner.scoring.calibration import log_duration


def add_operating_point(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("operating point (default: the EER point)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--far", type=float, metavar="RATE", help="false-accept rate, e.g. 0.01")
    x.add_argument("--prior", type=float, metavar="P", help="target prior for a Bayes decision")
    x.add_argument("--threshold", type=float, help="a raw cosine threshold (no calibration)")
    g.add_argument(
        "--asnorm",
        action="store_true",
        help="normalise the score against the checkpoint's cohort of training speakers",
    )


def rule_of(a: argparse.Namespace) -> tuple[str, float]:
    if a.far is not None:
        return "far", a.far
    if a.prior is not None:
        return "prior", a.prior
    return "eer", 0.0


def decide(model: SpeakerModel, score: float, q: float, a: argparse.Namespace) -> dict:
    """The decision for one score (already AS-normed with ``--asnorm``) of quality ``q``."""
    rule, value = rule_of(a)
    cal = model.calibration(a.asnorm)
    if a.threshold is not None:
        return {
            "same_speaker": score >= a.threshold,
            "threshold": a.threshold,
            "rule": "threshold",
            "rule_text": "the cosine threshold given",
        }
    if cal is None:
        if rule != "eer" or a.asnorm:
            raise ValueError(
                f"{model.source} has no {'AS-norm ' if a.asnorm else ''}calibration (saved "
                "before calibration, or by a run that did not finish): fit one with python -m "
                "learner.calibrate --data DIR -c CHECKPOINT, or use --threshold"
            )
        if model.threshold is None:
            raise ValueError(
                f"{model.source} has no threshold (it was saved before any evaluation); "
                "pass --threshold"
            )
        return {
            "same_speaker": score >= model.threshold,
            "threshold": model.threshold,
            "rule": "eer",
            "rule_text": "the checkpoint's cosine threshold at its held-out EER (uncalibrated)",
        }
    return cal.decide(score, q, rule, value)


def verify(model: SpeakerModel, a_path: str, b_path: str, a: argparse.Namespace) -> dict:
    ea, qa = model.embed(a_path)
    eb, qb = model.embed(b_path)
    cosine = float(ea @ eb)
    score = float(model.normalised(np.array([cosine]), ea, eb[None])[0]) if a.asnorm else cosine
    q = float(log_duration(qa.speech_s, qb.speech_s))
    d = decide(model, score, q, a)
    return {
        "a": a_path,
        "b": b_path,
        "score": round(score, 4),
        "score_kind": "asnorm" if a.asnorm else "cosine",
        **d,
        "threshold": round(float(d["threshold"]), 4),
        "margin": round(score - float(d["threshold"]), 4),
        "quality": {"a": qa.as_dict(), "b": qb.as_dict()},
    }


def describe(r: dict) -> str:
    verdict = "SAME speaker" if r["same_speaker"] else "DIFFERENT speakers"
    line = f"{verdict}: {r['score_kind']} score {r['score']:.3f}, threshold {r['threshold']:.3f}"
    if "llr" in r:
        line += (
            f"; LLR {r['llr']:+.2f}, P(same speaker) {r['p_same']:.3f} at prior {r['at_prior']:g}"
        )
    return line + f"\n  decided by {r['rule_text']}"


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.verify", __doc__)
    p.add_argument("a", help="first recording")
    p.add_argument("b", help="second recording")
    add_operating_point(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)

    def body() -> int:
        model = load_model(a)
        r = verify(model, a.a, a.b, a)
        print(json.dumps(r) if a.json else describe(r))
        return 0 if r["same_speaker"] else 1

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
