"""Enrol a speaker from a few recordings into a profile store (JSON).

Examples:
    python -m learner.enroll alice alice1.wav alice2.wav -c runs/x --store team.json
    python -m learner.enroll bob recordings/bob/ -c runs/x --store team.json

Re-enrolling a name replaces its profile. Then: python -m learner.identify.
"""

from __future__ import annotations

import sys

from learner.commands.cli import EXIT_ERROR, guarded, load_model, parser, speaker_name
from learner.commands.embed_recordings import embed_paths
from learner.inference.speaker_model import expand_inputs
from learner.scoring.profiles import ProfileStore


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.enroll", __doc__)
    p.add_argument("name", type=speaker_name, help="speaker name (no control characters)")
    p.add_argument("inputs", nargs="+", help="recordings of that speaker (files or folders)")
    p.add_argument("--store", required=True, help="profile store file (created if missing)")
    a = p.parse_args(argv)

    def body() -> int:
        model = load_model(a)
        ProfileStore(a.store).check_model(model.spec, model.fingerprint)  # fail before embedding
        emb, kept, skipped = embed_paths(model, expand_inputs(a.inputs), progress=False)
        for path, reason in skipped:
            print(f"warning: skipped {path}: {reason}", file=sys.stderr)
        if not kept:
            print(f"error: none of the recordings of {a.name} could be used", file=sys.stderr)
            return EXIT_ERROR
        with ProfileStore.update(a.store) as store:  # locked: concurrent enrols all land
            store.check_model(model.spec, model.fingerprint)
            store.add(a.name, emb, [str(p) for p, _ in kept])
        print(
            f"enrolled {a.name} from {len(kept)} recording(s); {len(store.names())} speaker(s) "
            f"in {a.store}"
        )
        return 0

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
