"""``python -m learner.verify --trials LIST -c RUN -o OUT``: a trial list with one model load.

    verify_trials(model, args)   # writes OUT/decisions.tsv and OUT/summary.json

Each file the list names is embedded once, however many trials name it (the throughput of
``learner.embed``); every trial is then decided exactly as ``verify a b`` decides it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from learner.commands.embed_recordings import embed_paths
from learner.commands.verify import verify_embedded
from learner.inference.speaker_model import SpeakerModel
from learner.scoring.scores import summarize
from learner.scoring.trials import parse_trial_lines

COLUMNS = ("enrol", "test", "score", "llr", "p_same", "decision", "rule", "label", "note")


def resolve_name(name: str, root: Path) -> Path:
    """A name of the list as a file: as written when it exists, else under ``root``."""
    p = Path(name)
    return p if p.is_file() or p.is_absolute() else root / p


def verify_trials(model: SpeakerModel, a: argparse.Namespace) -> int:
    entries = parse_trial_lines(a.trials, pairs=True)
    if not entries:
        raise ValueError(f"{a.trials}: no trials in it")
    root = Path(a.root) if a.root else Path(a.trials).resolve().parent
    files = sorted({name for _, x, y, _ in entries for name in (x, y)})
    paths = [resolve_name(name, root) for name in files]
    emb, kept, skipped = embed_paths(model, paths, a.progress)
    found = {path: (emb[k], quality) for k, (path, quality) in enumerate(kept)}
    found.update(skipped)  # path -> the reason it could not be used
    embedded: dict[str, tuple | str] = {n: found[p] for n, p in zip(files, paths, strict=True)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, scored, labels, decisions, failed = [], [], [], [], 0
    for label, x, y, _ in entries:
        one, two = embedded[x], embedded[y]
        if isinstance(one, str) or isinstance(two, str):
            failed += 1
            error = one if isinstance(one, str) else two
            rows.append([x, y, "", "", "", "error", "", label, error.replace("\t", " ")])
            continue
        r = verify_embedded(model, x, y, one, two, a)
        rows.append(
            [
                x,
                y,
                f"{r['score']:.5f}",
                "" if "llr" not in r else f"{r['llr']:.4f}",
                "" if "p_same" not in r else f"{r['p_same']:.4f}",
                "same" if r["same_speaker"] else "different",
                r["rule"],
                label,
                r.get("outside_calibration") or "",
            ]
        )
        if label is not None:
            scored.append(r["score"])
            labels.append(label)
            decisions.append(r["same_speaker"])
    with open(out / "decisions.tsv", "w") as fh:
        fh.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            fh.write("\t".join("" if v is None else str(v) for v in row) + "\n")
    summary: dict = {
        "trials": len(entries),
        "files": len(files),
        "files_unusable": sum(isinstance(v, str) for v in embedded.values()),
        "trials_not_scored": failed,
        "checkpoint": str(model.source),
    }
    y = np.asarray(labels, bool)
    if y.any() and (~y).any():
        d = np.asarray(decisions, bool)
        summary.update(
            summarize(np.asarray(scored), y).as_dict(),
            miss_rate=float(np.mean(~d[y])),
            false_accept_rate=float(np.mean(d[~y])),
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{len(entries) - failed} of {len(entries)} trials decided ({len(files)} files, each "
        f"embedded once); wrote {out}/decisions.tsv and summary.json",
        file=sys.stderr,
    )
    if failed:
        print(f"warning: {failed} trial(s) not scored: see the note column", file=sys.stderr)
    return 0
