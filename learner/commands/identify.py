"""Who is speaking? Rank the enrolled speakers of a profile store for a recording.

Examples:
    python -m learner.identify unknown.wav -c runs/x --store team.json --top 3
    python -m learner.identify unknown.wav -c runs/x --store team.json --far 0.01 --json

Prints the top-k enrolled speakers with their scores, and whether the best one is
accepted at the operating point (as learner.verify: the EER point by default, --far,
--prior or --threshold; --asnorm against the checkpoint's cohort), with its LLR and
the probability of the same speaker. The duration measure is the recording's seconds
of speech (the enrolled profiles are taken as long). A recording that is not speech is
refused (exit 2). Exit code 0 otherwise, accepted or not.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from learner.commands.cli import EXIT_ERROR, guarded, load_model, parser, printable
from learner.commands.verify import add_operating_point, decide, reachable
from learner.scoring.calibration import MAX_SECONDS, log_duration
from learner.scoring.profiles import ProfileStore


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.identify", __doc__)
    p.add_argument("recording", help="the recording to identify (an audio file)")
    p.add_argument("--store", required=True, help="profile store written by learner.enroll")
    p.add_argument("--top", type=int, default=3, help="how many speakers to list (1 or more)")
    add_operating_point(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the ranking"
    )
    a = p.parse_args(argv)
    if a.top < 1:
        p.error(f"--top must be at least 1, got {a.top}")

    def body() -> int:
        model = load_model(a)
        store = ProfileStore(a.store)
        if not store.names():
            print(f"error: {a.store} has no enrolled speakers", file=sys.stderr)
            return EXIT_ERROR
        store.check_model(model.spec, model.fingerprint)
        names, profiles = store.matrix()
        probe, quality = model.embed(a.recording)
        scores = profiles @ probe
        if a.asnorm:
            scores = model.normalised(scores, probe, profiles)
        order = np.argsort(-scores)[: a.top]
        ranked = [{"speaker": names[i], "score": round(float(scores[i]), 4)} for i in order]
        q = float(log_duration(quality.speech_s, MAX_SECONDS))
        undecidable = (  # saved before any evaluation, and nothing given: rank only
            model.threshold is None
            and model.calibration(a.asnorm) is None
            and (a.threshold, a.far, a.prior) == (None, None, None)
            and not a.asnorm
        )
        best = None if undecidable else decide(model, float(scores[order[0]]), q, a)
        if best is None and a.json:
            print(json.dumps({"ranking": ranked, "accepted": None, "quality": quality.as_dict()}))
            return 0
        if best is None:
            for rank, r in enumerate(ranked, 1):
                print(f"{rank}. {printable(r['speaker'])}\t{r['score']:.3f}")
            print("no decision: the checkpoint has no threshold yet (pass --threshold)")
            return 0
        if a.json:
            print(
                json.dumps(
                    {
                        "ranking": ranked,
                        "accepted": bool(best["same_speaker"]),
                        "threshold": reachable(best["threshold"]),
                        "decision": best,
                        "quality": quality.as_dict(),
                    }
                )
            )
        else:
            for rank, r in enumerate(ranked, 1):
                print(f"{rank}. {printable(r['speaker'])}\t{r['score']:.3f}")
            extra = (
                f" (LLR {best['llr']:+.2f}, P(same speaker) {best['p_same']:.3f} at prior "
                f"{best['at_prior']:g})"
                if "llr" in best
                else ""
            )
            t = reachable(best["threshold"])
            against = f"threshold {t:.3f}" if t is not None else "no score reaches the threshold"
            print(
                f"best match {'is accepted' if best['same_speaker'] else 'is rejected'}: "
                f"score {ranked[0]['score']:.3f}, {against}{extra}; "
                f"decided by {best['rule_text']}"
            )
        return 0

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
