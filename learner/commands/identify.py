"""Who is speaking? Rank the enrolled speakers of a profile store for a recording.

Examples:
    python -m learner.identify unknown.wav -c runs/x --store team.json --top 3

Prints the top-k enrolled speakers with their cosine scores, and whether the
best one passes the checkpoint's verification threshold.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from learner.commands.cli import EXIT_ERROR, guarded, load_model, parser
from learner.scoring.profiles import ProfileStore


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.identify", __doc__)
    p.add_argument("recording")
    p.add_argument("--store", required=True, help="profile store written by learner.enroll")
    p.add_argument("--top", type=int, default=3, help="how many speakers to list (1 or more)")
    p.add_argument("--json", action="store_true")
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
        scores = profiles @ model.embed_file(a.recording)
        order = np.argsort(-scores)[: a.top]
        ranked = [{"speaker": names[i], "score": round(float(scores[i]), 4)} for i in order]
        accepted = model.threshold is not None and ranked[0]["score"] >= model.threshold
        if a.json:
            print(
                json.dumps({"ranking": ranked, "threshold": model.threshold, "accepted": accepted})
            )
        else:
            for rank, r in enumerate(ranked, 1):
                print(f"{rank}. {r['speaker']}\t{r['score']:.3f}")
            if model.threshold is not None:
                print(
                    f"best match {'passes' if accepted else 'is below'} the threshold "
                    f"{model.threshold:.3f}"
                )
        return 0

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
