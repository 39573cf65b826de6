"""Are two recordings the same speaker? Cosine score against the checkpoint's threshold.

Examples:
    python -m learner.verify a.wav b.flac --checkpoint runs/20261124-073721-3f9a
    python -m learner.verify a.wav b.wav -c runs/x/checkpoints/ckpt-00001800 --threshold 0.6 --json

Exit code: 0 same speaker, 1 different speakers, 2 error (unreadable file, no
speech detected, bad checkpoint). The threshold is the one at which the best
checkpoint reached its equal error rate on held-out speakers.
"""

from __future__ import annotations

import json
import sys

from learner.commands.cli import EXIT_ERROR, guarded, load_model, parser
from learner.commands.speaker_model import SpeakerModel


def verify(model: SpeakerModel, a: str, b: str, threshold: float) -> dict:
    score = model.score(a, b)
    return {
        "a": a,
        "b": b,
        "score": round(score, 4),
        "threshold": round(threshold, 4),
        "same_speaker": score >= threshold,
        "margin": round(score - threshold, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.verify", __doc__)
    p.add_argument("a", help="first recording")
    p.add_argument("b", help="second recording")
    p.add_argument("--threshold", type=float, help="override the checkpoint's threshold")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)

    def body() -> int:
        model = load_model(a)
        threshold = a.threshold if a.threshold is not None else model.threshold
        if threshold is None:
            print(
                f"error: {model.source} has no calibrated threshold (it was saved "
                "before any evaluation); pass --threshold",
                file=sys.stderr,
            )
            return EXIT_ERROR
        r = verify(model, a.a, a.b, threshold)
        if a.json:
            print(json.dumps(r))
        else:
            verdict = "SAME speaker" if r["same_speaker"] else "DIFFERENT speakers"
            print(
                f"{verdict}: score {r['score']:.3f}, threshold {r['threshold']:.3f} "
                f"({r['margin']:+.3f} from it)"
            )
        return 0 if r["same_speaker"] else 1

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
