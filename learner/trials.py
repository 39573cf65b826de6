"""Verification trials over a corpus: ``(label, i, j)`` with utterance indices of a database,
generated with a fixed seed or read from a list file.

    trials = generate_trials(db, 5000, seed=0)
    trials = read_trials("veri_test.txt", db)        # 'label path1 path2' per line
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from workers.corpus import SpeakerDatabase

Trial = tuple[int, int, int]  # (1 same speaker | 0 different, utterance i, utterance j)


def generate_trials(db: SpeakerDatabase, n_trials: int, seed: int = 0) -> list[Trial]:
    """``(label, i, j)`` over utterance indices of ``db``: up to half target pairs (all of
    them when fewer), the rest non-target pairs, both drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    targets = [
        (1, i, j) for s in db.speakers for i, j in itertools.combinations(db.by_speaker[s], 2)
    ]
    if len(targets) > n_trials // 2:
        keep = rng.choice(len(targets), n_trials // 2, replace=False)
        targets = [targets[k] for k in sorted(keep)]
    n_non = max(n_trials - len(targets), len(targets))
    spk = np.array([db.speaker_index[u.speaker] for u in db.utterances])
    nontargets: set[Trial] = set()
    max_pairs = (len(spk) ** 2 - sum(len(v) ** 2 for v in db.by_speaker.values())) // 2
    while len(nontargets) < min(n_non, max_pairs):
        i, j = (int(x) for x in rng.integers(len(spk), size=2))
        if spk[i] != spk[j]:
            nontargets.add((0, min(i, j), max(i, j)))
    return targets + sorted(nontargets)


def read_trials(path: str | Path, db: SpeakerDatabase) -> list[Trial]:
    """A trial list, ``label path1 path2`` per line with paths relative to the corpus root."""
    index = {u.path: i for i, u in enumerate(db.utterances)}
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected 'label path1 path2', got {line!r}")
        missing = [p for p in parts[1:] if p not in index]
        if missing:
            raise ValueError(f"{path}:{n}: {missing[0]} is not a usable file under {db.root}")
        out.append((int(parts[0]), index[parts[1]], index[parts[2]]))
    return out
