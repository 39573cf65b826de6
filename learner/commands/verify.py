"""Are two recordings the same speaker? A calibrated decision at the operating point you choose.

Examples:
    python -m learner.verify a.wav b.flac --checkpoint runs/20261124-073721-3f9a
    python -m learner.verify a.wav b.wav -c runs/x --far 0.01          # 1% false accepts
    python -m learner.verify a.wav b.wav -c runs/x --prior 0.05 --json  # Bayes at prior 5%
    python -m learner.verify a.wav b.wav -c runs/x --asnorm             # with the stored cohort
    python -m learner.verify --trials list.txt -c runs/x -o scored/     # a trial list, one load

--trials scores a VoxCeleb list (``1 a.wav b.wav``), Kaldi trials (``a b target``) or a
two-column pair list (``a b``) with one model load, each file embedded once however many
trials name it; names are paths, as written or under --root (default: the list's
folder). It writes OUT/decisions.tsv (per trial: the score, LLR, P(same), decision and
rule, or the error that kept it from being scored) and OUT/summary.json (with labels:
EER, and the misses and false accepts of the decisions).

The cosine score of the two embeddings is mapped to a log-likelihood ratio (LLR) by the
checkpoint's calibration, fitted on held-out speakers at the end of training (or on your
own recordings: python -m learner.calibrate), with the shorter input's seconds of speech
as a quality measure: short inputs score differently, and the decision accounts for it.

Operating points (one of):
  (default)     the Bayes decision at target prior 0.5 (accept when LLR >= 0)
  --prior P     the Bayes decision at target prior P (accept when LLR >= -logit(P))
  --rule eer    the equal-error-rate point of the calibration trials
  --far F       false accepts at rate F on the calibration trials, at every duration
  --threshold T a raw cosine threshold, no calibration

The output gives the LLR and the probability of the same speaker at the prior for which
the rule's threshold is the Bayes decision (the prior given, or the one an --rule eer or
--far threshold implies, printed beside it): SAME exactly when that probability is at
least 0.5, so the verdict, the probability and the exit code never disagree. LLRs are
bounded by what the calibration trials support (docs/scoring.md). An input shorter than
the shortest speech the calibration saw is said (--strict refuses it); one longer than
the longest gets the LLR of the longest. A checkpoint from before calibration decides on
its cosine threshold as it always did (--far and --prior need a calibration: run python
-m learner.calibrate). Inputs that are not speech (silence, noise, a tone, music) or have
too little of it are refused (exit 2; see --min-speech).

Exit code: 0 same speaker, 1 different speakers, 2 error (unreadable file, not
speech, bad checkpoint).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from learner.commands.cli import add_progress, finite, guarded, load_model, parser, probability
from learner.inference.speaker_model import SpeakerModel
from learner.scoring.calibration import log_duration


def add_operating_point(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("operating point (default: the Bayes decision at prior 0.5)")
    x = g.add_mutually_exclusive_group()
    x.add_argument(
        "--rule",
        choices=["prior", "eer"],
        help="prior: the Bayes decision at --prior (0.5); eer: the calibration trials' "
        "equal-error-rate point",
    )
    x.add_argument(
        "--far",
        type=probability,
        metavar="RATE",
        help="false-accept rate, e.g. 0.01 (at least 1 over the calibration's non-target trials)",
    )
    x.add_argument(
        "--prior", type=probability, metavar="P", help="target prior for a Bayes decision"
    )
    x.add_argument("--threshold", type=finite, help="a raw cosine threshold (no calibration)")
    g.add_argument(
        "--asnorm",
        action="store_true",
        help="normalise the score against the checkpoint's cohort of training speakers",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) an input with less speech than the calibration was fitted on",
    )


def rule_of(a: argparse.Namespace) -> tuple[str, float]:
    if a.far is not None:
        return "far", a.far
    if a.prior is not None:
        return "prior", a.prior
    if a.rule == "eer":
        return "eer", 0.0
    return "prior", 0.5


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
        if a.far is not None or a.prior is not None or a.asnorm:
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
    d = cal.decide(score, q, rule, value)
    d["calibrated_seconds"] = [round(x, 3) for x in cal.seconds_range()]
    d["outside_calibration"] = cal.duration_note(q)
    if d["outside_calibration"] == "shorter" and getattr(a, "strict", False):
        raise ValueError(
            f"the shorter input has {np.exp(q):.2f} s of speech, less than the "
            f"{d['calibrated_seconds'][0]:.2f} s the calibration was fitted on (--strict)"
        )
    return d


def verify(model: SpeakerModel, a_path: str, b_path: str, a: argparse.Namespace) -> dict:
    return verify_embedded(model, a_path, b_path, model.embed(a_path), model.embed(b_path), a)


def verify_embedded(model: SpeakerModel, a_path, b_path, one, two, a: argparse.Namespace) -> dict:
    """The decision on two embedded inputs (``(embedding, quality)`` each)."""
    (ea, qa), (eb, qb) = one, two
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
        "threshold": reachable(d["threshold"]),
        "margin": None if reachable(d["threshold"]) is None else round(score - d["threshold"], 4),
        "quality": {"a": qa.as_dict(), "b": qb.as_dict()},
    }


def reachable(threshold: float) -> float | None:
    """A threshold for output: None where no score reaches it (a prior beyond the LLRs
    the calibration supports)."""
    return round(float(threshold), 4) if np.isfinite(threshold) else None


def describe(r: dict) -> str:
    verdict = "SAME speaker" if r["same_speaker"] else "DIFFERENT speakers"
    t = r["threshold"]
    line = f"{verdict}: {r['score_kind']} score {r['score']:.3f}, " + (
        f"threshold {t:.3f}" if t is not None else "no score reaches the threshold"
    )
    if "llr" in r:
        bounded = " (bounded)" if r.get("llr_bounded") else ""
        line += (
            f"; LLR {r['llr']:+.2f}{bounded}, P(same speaker) {r['p_same']:.3f} "
            f"at prior {r['at_prior']:g}"
        )
    line += f"\n  decided by {r['rule_text']}"
    note = r.get("outside_calibration")
    if note:
        lo, hi = r["calibrated_seconds"]
        line += (
            f"\n  note: the shorter input's speech is {note} than the calibration's "
            f"{lo:.2f}-{hi:.2f} s; its LLR is that of the nearest calibrated duration"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.verify", __doc__)
    p.add_argument("a", nargs="?", help="first recording")
    p.add_argument("b", nargs="?", help="second recording")
    add_operating_point(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    t = p.add_argument_group("trial lists (instead of a and b)")
    t.add_argument("--trials", metavar="LIST", help="VoxCeleb, Kaldi or two-column pair list")
    t.add_argument("--root", help="folder the list's names are under (default: its folder)")
    t.add_argument("-o", "--out", help="output folder for --trials")
    add_progress(p)
    a = p.parse_args(argv)
    if a.trials and (a.a or a.b or not a.out):
        p.error("--trials takes no recordings, and needs -o OUT")
    if not a.trials and not (a.a and a.b):
        p.error("give two recordings, or --trials LIST -o OUT")

    def body() -> int:
        model = load_model(a)
        if a.trials:
            from learner.commands.verify_trials import verify_trials

            return verify_trials(model, a)
        r = verify(model, a.a, a.b, a)
        print(json.dumps(r) if a.json else describe(r))
        return 0 if r["same_speaker"] else 1

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
