"""Verification trials over a corpus: ``(label, i, j)`` with utterance indices of a database,
generated with a fixed seed or read from a list file.

    trials = generate_trials(db, 5000, seed=0)
    listed = read_trials("veri_test.txt", Names(...))  # VoxCeleb or Kaldi trial lists
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.corpus import SpeakerDatabase

N_TRIALS = 6000  # trials generated when none are given (calibrate, evaluate)
Trial = tuple[int, int, int]  # (1 same speaker | 0 different, utterance i, utterance j)


def generate_trials(db: SpeakerDatabase, n_trials: int, seed: int = 0) -> list[Trial]:
    """``(label, i, j)`` over utterance indices of ``db``: up to half target pairs (all of
    them when fewer), the rest non-target pairs, both drawn with a fixed seed."""
    return trials_of_speakers([u.speaker for u in db.utterances], n_trials, seed, db.speakers)


def trials_of_speakers(
    speaker_of: list[str], n_trials: int, seed: int = 0, order: list[str] | None = None
) -> list[Trial]:
    """:func:`generate_trials` over items labelled by speaker (``speaker_of[i]``; the
    speakers taken in ``order``, sorted by default): saved embeddings whose ids are
    ``speaker/utterance`` get the trials their corpus would."""
    rng = np.random.default_rng(seed)
    speakers = list(order) if order is not None else sorted(set(speaker_of))
    index = {s: k for k, s in enumerate(speakers)}
    by_speaker: dict[str, list[int]] = {s: [] for s in speakers}
    for i, s in enumerate(speaker_of):
        by_speaker[s].append(i)
    targets = [(1, i, j) for s in speakers for i, j in itertools.combinations(by_speaker[s], 2)]
    if len(targets) > n_trials // 2:
        keep = rng.choice(len(targets), n_trials // 2, replace=False)
        targets = [targets[k] for k in sorted(keep)]
    n_non = max(n_trials - len(targets), len(targets))
    spk = np.array([index[s] for s in speaker_of])
    nontargets: set[Trial] = set()
    max_pairs = (len(spk) ** 2 - sum(len(v) ** 2 for v in by_speaker.values())) // 2
    while len(nontargets) < min(n_non, max_pairs):
        i, j = (int(x) for x in rng.integers(len(spk), size=2))
        if spk[i] != spk[j]:
            nontargets.add((0, min(i, j), max(i, j)))
    return targets + sorted(nontargets)


class Names:
    """Resolves the names a trial list uses to item indices: a corpus path, the same path
    below a folder above it (VoxCeleb1 lists are relative to ``wav/``), with or without the
    extension, or an utterance id (Kaldi)."""

    def __init__(self, names: list[list[str]]) -> None:
        self.index: dict[str, int] = {}
        ambiguous: set[str] = set()
        for i, aliases in enumerate(names):
            for name in aliases:
                parts = Path(name).parts
                for k in range(len(parts)):  # the path and each shorter tail of it
                    tail = "/".join(parts[k:])
                    for key in {tail, tail.rsplit(".", 1)[0] if "." in parts[-1] else tail}:
                        if self.index.setdefault(key, i) != i:
                            ambiguous.add(key)
        for key in ambiguous:  # a bare "00001.wav" names many files: never guess
            del self.index[key]

    def find(self, name: str) -> int | None:
        name = name.strip("/").replace("\\", "/")
        found = self.index.get(name)
        if found is None and "." in Path(name).name:
            found = self.index.get(name.rsplit(".", 1)[0])
        return found


@dataclass
class TrialList:
    trials: list[Trial]
    names: list[tuple[str, str]]  # each trial's two names as the list writes them
    missing: int = 0  # trials skipped because a file is not in the corpus
    example: str = ""  # one missing name, for the message


KALDI_LABELS = {"target": 1, "nontarget": 0}


def parse_trial_lines(
    path: str | Path, pairs: bool = False
) -> list[tuple[int | None, str, str, int]]:
    """The trials of a list as written: ``(label, enrol, test, line number)``, one per line,
    in either common format:

    - VoxCeleb (Vox1-O, -E, -H): ``1 id10270/x6uYqmx31kE/00001.wav id10273/8cfyJEV7hP8/00001.wav``
    - Kaldi: ``<enrol> <test> target|nontarget`` (utterance ids or paths)

    and, with ``pairs``, a two-column pair list ``<enrol> <test>`` (label None)."""
    out: list[tuple[int | None, str, str, int]] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 3 and parts[0] in ("0", "1"):
            out.append((int(parts[0]), parts[1], parts[2], n))
        elif len(parts) == 3 and parts[2] in KALDI_LABELS:
            out.append((KALDI_LABELS[parts[2]], parts[0], parts[1], n))
        elif len(parts) == 2 and pairs:
            out.append((None, parts[0], parts[1], n))
        else:
            raise ValueError(
                f"{path}:{n}: expected '1|0 <enrol> <test>' (VoxCeleb) or "
                f"'<enrol> <test> target|nontarget' (Kaldi)"
                + (" or '<enrol> <test>' (pairs)" if pairs else "")
                + f", got {line!r}"
            )
    return out


def read_trials(path: str | Path, names: Names) -> TrialList:
    """A trial list (:func:`parse_trial_lines`) resolved against a corpus's ``names``. A
    trial naming a file the corpus does not have is skipped and counted, not fatal."""
    out = TrialList([], [])
    for label, a, b, _ in parse_trial_lines(path):
        i, j = names.find(a), names.find(b)
        if i is None or j is None:
            out.missing += 1
            out.example = out.example or (a if i is None else b)
            continue
        out.trials.append((label, i, j))
        out.names.append((a, b))
    return out
