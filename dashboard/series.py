"""Reducing long metric series for drawing: downsampling that keeps spikes, moving averages.

Pure NumPy on the columns a ``RunSeries`` holds; a chart never draws more than a few
thousand points however long the run.

    idx = minmax(loss, 2000)          # indices of each bucket's min and max
    smooth = moving_average(loss, 50)
"""

from __future__ import annotations

import numpy as np


def downsample(n: int, max_points: int = 2000) -> np.ndarray:
    """Indices to draw for a series of ``n`` points: all when few, else per bucket the
    first point plus the extremes are kept by the caller (see ``minmax``)."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).astype(np.int64))


def minmax(y: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """Indices keeping each bucket's min and max, so spikes survive downsampling."""
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max_points // 2
    size = -(-n // buckets)
    pad = buckets * size - n
    yy = np.concatenate([y, np.full(pad, np.nan)]).reshape(buckets, size)
    filled = np.where(np.isnan(yy), np.inf, yy)
    lo = np.argmin(filled, axis=1) + np.arange(buckets) * size
    hi = np.argmax(np.where(np.isnan(yy), -np.inf, yy), axis=1) + np.arange(buckets) * size
    idx = np.unique(np.concatenate([lo, hi]))
    return idx[idx < n]


def moving_average(y: np.ndarray, window: int = 50) -> np.ndarray:
    if len(y) == 0:
        return y
    c = np.cumsum(np.insert(np.nan_to_num(y), 0, 0.0))
    out = np.empty(len(y))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    out[:] = (c[idx] - c[lo]) / (idx - lo)
    return out
