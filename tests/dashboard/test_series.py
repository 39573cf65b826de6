"""Series reduction for plotting: pure NumPy."""

from __future__ import annotations

import numpy as np

from dashboard.series import minmax


def test_minmax_keeps_spikes():
    y = np.zeros(100_000)
    y[12345], y[67890] = 5.0, -5.0
    idx = minmax(y, 2000)
    assert len(idx) <= 2000 and 12345 in idx and 67890 in idx
