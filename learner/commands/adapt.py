"""Adapt a trained model's decisions to your recordings, without speaker labels.

Examples:
    python -m learner.adapt --data call-centre/ -c runs/x -o runs/x-call-centre
    python -m learner.adapt --data call-centre/ -c runs/x --in-place --name call-centre
    python -m learner.verify a.wav b.wav -c runs/x-call-centre      # decides for that domain

--data holds recordings of the domain you will verify in (the same kind of microphone,
channel, language and length), with no labels: a few hundred recordings of dozens of
people, and at least --min-recordings (100). Sub-folders, if any, are taken as one person or
session each: pairs inside one are left out of the estimate (a flat folder is fine too).

What is stored with the checkpoint (a copy under OUT, or in place with --in-place; files
written atomically, nothing on refusal):
  - the domain's mean embedding, removed from every embedding before scoring (then
    renormalised), as the SRE recipes remove the in-domain mean;
  - a cohort of the domain's recordings for --asnorm;
  - the calibrations carried to the domain: the non-target scores' mean, spread and tail
    at each duration re-estimated on random pairs of the recordings, with the few pairs of
    one speaker among them weighed out by the run's own likelihood ratio (a two-class
    mixture, docs/adaptation.md); the LLR's slope and bounds stay the run's.

Every command (verify, identify, enroll, embed, evaluate, calibrate, export, and the ONNX
runtime) then applies the domain the same way, and says which domain decided. With
labelled recordings of the domain, python -m learner.calibrate on the adapted checkpoint
replaces the estimate with a labelled fit.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from learner.commands.cli import add_progress, guarded, load_model, parser
from learner.inference.domain import Domain
from learner.inference.recordings import cut_recordings, folder_of
from learner.inference.speaker_model import SpeakerModel, expand_inputs
from learner.scoring.pipeline import CutEmbeddings, cohort_groups, cohort_vectors
from learner.scoring.unlabelled import adapt_calibration

# Below this many usable recordings the estimate is refused: half of them make the
# cohort and half the pairs, and the 1% tail of each duration bin needs a few thousand
# pairs of different people. Measured (bench/adapt.py, docs/adaptation.md): 50 recordings
# moved the short inputs' false accepts most; 100 to 400 gave the same errors.
MIN_RECORDINGS = 100
FLOOR = 40  # --min-recordings cannot go below this (tests use a small fixture)
PAIRS = 30000  # random pairs of recordings the non-target side is estimated on


def split_recordings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Recordings for the cohort and recordings for the pairs: disjoint halves (a cohort
    member scored against itself would distort AS-norm)."""
    order = np.random.default_rng(seed).permutation(n)
    half = min(n // 2, 300)
    return np.sort(order[:half]), np.sort(order[half:])


def domain_pairs(rows: np.ndarray, groups: list[int], n_pairs: int, seed: int) -> list[tuple]:
    """Up to ``n_pairs`` distinct random pairs of ``rows``, none inside one group (a
    sub-folder: likely one person or one session)."""
    rng = np.random.default_rng(seed + 1)
    g = np.asarray(groups)
    seen: set[tuple[int, int]] = set()
    possible = len(rows) * (len(rows) - 1) // 2
    for _ in range(20):
        i, j = rng.choice(rows, (2, 2 * n_pairs))
        for x, y in zip(i, j, strict=True):
            key = (min(x, y), max(x, y))
            if x != y and (g[x] < 0 or g[x] != g[y]):
                seen.add(key)
            if len(seen) >= min(n_pairs, possible):
                return [(0, a, b) for a, b in sorted(seen)]
    return [(0, a, b) for a, b in sorted(seen)]


def fit_domain(
    model: SpeakerModel,
    cuts: CutEmbeddings,
    groups: list[int],
    name: str,
    where: str,
    n_pairs: int = PAIRS,
    seed: int = 0,
) -> Domain:
    """The domain of the recordings in ``cuts`` (raw embeddings, full and cut): its mean,
    cohort and the run's calibrations carried to it. ``groups``: each recording's
    sub-folder id (-1: none)."""
    mean = cuts.full.mean(axis=0)
    domain = Domain(name, mean, None, {})
    t = cuts.transformed(domain.transform)
    cohort_rows, pair_rows = split_recordings(cuts.n, seed)
    domain.cohort = cohort_vectors(t.full, cohort_groups([[i] for i in cohort_rows], seed=seed))
    pairs = domain_pairs(pair_rows, groups, n_pairs, seed)
    scored = t.scored(pairs, domain.cohort)
    fitted_on = f"domain '{name}' ({cuts.n} recordings of {where}, no labels)"
    shares = {}
    for kind, s in scored.kinds.items():
        source = model.calibrations.get(kind)
        if source is not None:
            domain.calibrations[kind], shares[kind] = adapt_calibration(
                source, s, scored.q, fitted_on
            )
    domain.info = {
        "recordings": int(cuts.n),
        "cohort": int(len(domain.cohort)),
        "pairs": len(pairs),
        "same_speaker_share": round(shares["cosine"], 4),
        "source": where,
        "adapted_from": model.weights_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return domain


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.adapt", __doc__)
    p.add_argument("--data", required=True, help="recordings of the domain (no labels needed)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--out", help="write an adapted copy of the checkpoint here")
    where.add_argument("--in-place", action="store_true", help="store the domain in the checkpoint")
    p.add_argument("--name", help="the domain's name in every decision (default: --data's name)")
    p.add_argument("--pairs", type=int, default=PAIRS, help=f"random pairs (default {PAIRS})")
    p.add_argument(
        "--min-recordings",
        type=int,
        default=MIN_RECORDINGS,
        help=f"refuse fewer usable recordings (default {MIN_RECORDINGS}, at least {FLOOR})",
    )
    p.add_argument("--seed", type=int, default=0)
    add_progress(p)
    a = p.parse_args(argv)
    if a.min_recordings < FLOOR:
        p.error(f"--min-recordings must be at least {FLOOR}")

    def body() -> int:
        model = load_model(a)
        if "cosine" not in model.calibrations:
            raise ValueError(
                f"{model.source} has no calibration to carry to a domain: use the checkpoint "
                "of a finished run (or run python -m learner.calibrate on it first)"
            )
        root = Path(a.data)
        files = expand_inputs([a.data])
        if len(files) < a.min_recordings:
            raise ValueError(too_few(len(files), a.min_recordings, root, "audio files"))
        model.domain = None  # adapt from the run's own space, even when re-adapting
        cuts, ok = cut_recordings(model, files, a.progress)
        if cuts.n < a.min_recordings:
            raise ValueError(too_few(cuts.n, a.min_recordings, root, "usable recordings"))
        groups = np.asarray(folder_of(files, root))[ok].tolist()
        name = a.name or root.resolve().name
        domain = fit_domain(model, cuts, groups, name, str(root), a.pairs, a.seed)
        target = write_adapted(model, domain, a)
        print(json.dumps({"domain": name, "written": str(target), **domain.info}, indent=1))
        return 0

    return guarded(body)


def too_few(n: int, minimum: int, root: Path, what: str) -> str:
    return (
        f"{root}: {n} {what}, need at least {minimum}: the domain's mean, its cohort and the "
        "1% tail of its different-speaker scores at each duration are estimated from them "
        "(a few hundred recordings of dozens of people; docs/adaptation.md)"
    )


def write_adapted(model: SpeakerModel, domain: Domain, a) -> Path:
    """The domain stored in place, or in a copy of the checkpoint (or export) under
    ``a.out``, made beside it and renamed into place: a reader sees it whole or not at all."""
    source = model.checkpoint.path if model.checkpoint is not None else model.source.parent
    if a.in_place:
        domain.write(source)
        return source
    out = Path(a.out)
    # A checkpoint goes to OUT/<its name> (-c OUT resolves to it); an ONNX export's
    # folder becomes OUT itself.
    final = out / source.name if model.checkpoint is not None else out
    if final.exists() and (final != out or any(out.iterdir())):
        raise FileExistsError(f"{final} exists: give another -o, or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rmdir()  # an empty OUT for an export
    staging = final.parent / f".adapting-{final.name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("domain.*"))
    domain.write(staging)
    staging.rename(final)
    return final


if __name__ == "__main__":
    sys.exit(main())
