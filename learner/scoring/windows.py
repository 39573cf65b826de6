"""Utterance embeddings from log-mel frames: windows of the training segment length, each
embedded, averaged and L2-normalised. Pure NumPy around an ``Embedder`` callable, so the
learner's held-out evaluation and the inference commands share it.

    emb = embed_features([feats_a, feats_b], model_fn, frames=160)   # [2, D] unit vectors
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from workers.audio import AudioError
from workers.features import fit_frames

log = logging.getLogger(__name__)

Embedder = Callable[[np.ndarray], np.ndarray]  # [N, T, M] float32 -> [N, D] unit vectors


def windows(features: np.ndarray, frames: int) -> np.ndarray:
    """``[W, frames, M]`` half-overlapping windows covering the utterance."""
    n = len(features)
    if n <= frames:
        return fit_frames(features, frames, 0)[None]
    hop = max(1, frames // 2)
    starts = list(range(0, n - frames + 1, hop))
    if starts[-1] != n - frames:
        starts.append(n - frames)
    return np.stack([features[s : s + frames] for s in starts])


def embed_features(
    feature_list: list[np.ndarray], embed: Embedder, frames: int, batch: int = 64
) -> np.ndarray:
    """One unit-norm embedding per utterance (mean over its windows)."""
    wins = [windows(np.asarray(f, dtype=np.float32), frames) for f in feature_list]
    flat = np.concatenate(wins) if wins else np.zeros((0, frames, 1), np.float32)
    out = (
        np.concatenate([embed(flat[i : i + batch]) for i in range(0, len(flat), batch)])
        if len(flat)
        else np.zeros((0, 0), np.float32)
    )
    result, pos = [], 0
    for w in wins:
        e = out[pos : pos + len(w)].mean(axis=0)
        result.append(e / max(np.linalg.norm(e), 1e-12))
        pos += len(w)
    return np.stack(result).astype(np.float32) if result else out


def embed_files(
    paths: Sequence[Path], embed_file: Callable[[Path], np.ndarray], wanted: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``paths[i]`` for ``i`` in ``wanted``: ``(emb [len(paths), D], ok [len(paths)])``.

    A file that cannot be used (``AudioError``) is logged and left out (``ok`` false).
    """
    emb = np.zeros((len(paths), 1), np.float32)
    ok = np.zeros(len(paths), bool)
    for i in wanted:
        try:
            v = embed_file(paths[i])
        except AudioError as exc:
            log.warning("%s", exc)
            continue
        if emb.shape[1] != len(v):
            emb = np.zeros((len(paths), len(v)), np.float32)
        emb[i], ok[i] = v, True
    return emb, ok
