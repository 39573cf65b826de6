"""Recordings through a loaded model, as the calibration pipeline and the cohort rule
(``learner.scoring.pipeline``) take them: the commands that calibrate (``calibrate``,
``adapt``) and the ones that normalise against a folder (``evaluate --asnorm DIR``) call
these, so each file is read through the same front end and the same rule picks a cohort.

    cuts, ok = cut_recordings(model, paths)            # rows: the usable files, in order
    cohort = folder_cohort(model, "cohort-speakers/")   # [groups, D] unit vectors
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from learner.inference.speaker_model import SpeakerModel, expand_inputs
from learner.scoring.calibration import CUTS
from learner.scoring.pipeline import CutEmbeddings, cohort_groups, cohort_vectors, cut_embeddings
from workers.audio import AudioError

log = logging.getLogger(__name__)


def progress_bar(total: int, desc: str, unit: str, progress: bool | None):
    """A tqdm bar on stderr; ``progress`` None: only on a terminal."""
    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, file=sys.stderr)


def read_recordings(
    model: SpeakerModel, paths: Sequence[Path], progress: bool | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """The log-mel of each usable file (the front end's checks passed) and which those are;
    the others are warned about on stderr and left out."""
    feats, ok = [], np.zeros(len(paths), bool)
    with progress_bar(len(paths), "reading", "file", progress) as bar:
        for i, path in enumerate(paths):
            try:
                feats.append(model.analyse(path)[0])
                ok[i] = True
            except AudioError as exc:
                print(f"warning: {exc}", file=sys.stderr)
            bar.update(1)
    return feats, ok


def cut_recordings(
    model: SpeakerModel, paths: Sequence[Path], progress: bool | None = None
) -> tuple[CutEmbeddings, np.ndarray]:
    """The usable files' embeddings at full length and cut to each calibration duration
    (rows in the order of ``paths``, unusable files left out), and which files were used.
    An adapted model's embeddings go through its domain's transform, as everywhere else."""
    feats, ok = read_recordings(model, paths, progress)
    hop = model.cfg.features.hop_ms / 1000
    with progress_bar(1 + len(CUTS), "embedding", "version", progress) as bar:
        cuts = cut_embeddings(
            feats,
            model.embed_batch,
            model.cfg.sampler.frames,
            hop,
            progress=lambda k: bar.update(1),
        )
    return (cuts.transformed(model.domain.transform) if model.domain else cuts), ok


def folder_of(files: Sequence[Path], root: Path) -> list[int]:
    """Each file's sub-folder of ``root`` as a number (a speaker or a session), -1 for a
    file directly in ``root`` (one recording, no label)."""
    ids: dict[str, int] = {}
    out = []
    for f in files:
        parts = f.relative_to(root).parts
        out.append(ids.setdefault(parts[0], len(ids)) if len(parts) > 1 else -1)
    return out


def folder_groups(files: Sequence[Path], root: Path) -> list[list[int]]:
    """Files grouped by the sub-folder of ``root`` they are in (a speaker each); a file
    directly in ``root`` is a group of its own (one recording, no label)."""
    folders = folder_of(files, root)
    by_folder: dict[int, list[int]] = {}
    for i, k in enumerate(folders):
        by_folder.setdefault(k, []).append(i)
    alone = [[i] for i in by_folder.pop(-1, [])]
    return list(by_folder.values()) + alone


def folder_cohort(
    model: SpeakerModel, folder: str | Path, speakers: int | None = None, seed: int = 0
) -> np.ndarray:
    """An AS-norm cohort from a folder by the one cohort rule: one group per sub-folder
    (a speaker), or per file directly in the folder."""
    from learner.scoring.pipeline import COHORT_SPEAKERS

    root = Path(folder)
    files = expand_inputs([str(root)])
    if not files:
        raise ValueError(f"--cohort {folder}: no audio files there")
    chosen = cohort_groups(folder_groups(files, root), speakers or COHORT_SPEAKERS, seed=seed)
    wanted = [files[i] for g in chosen for i in g]
    feats, ok = read_recordings(model, wanted)
    if not ok.any():
        raise ValueError(f"--cohort {folder}: none of its files could be embedded")
    emb = np.zeros((len(wanted), model.cfg.model.embedding_dim), np.float32)
    emb[ok] = model.embed_features(feats)
    rows, start = [], 0
    for g in chosen:
        rows.append([start + k for k in range(len(g)) if ok[start + k]])
        start += len(g)
    return cohort_vectors(emb, [r for r in rows if r])
