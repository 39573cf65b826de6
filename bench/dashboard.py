"""Dashboard refresh cost against a real Redis: runs of 10k and 1M logged steps.

For each size: the first load (reading the whole history), then a steady-state
refresh (10 new steps read incrementally and all figures rebuilt, downsampled),
which is what every 2-second tick costs.

    python bench/dashboard.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import plotly.utils  # noqa: E402

from bench.common import median, report  # noqa: E402
from cluster import metrics as M  # noqa: E402
from cluster.redis_server import EmbeddedRedis  # noqa: E402
from dashboard import figures as F  # noqa: E402
from dashboard.store import RunSeries  # noqa: E402


def fill(client, run: str, start: int, n: int, chunk: int = 20_000) -> None:
    rng = np.random.default_rng(start)
    for lo in range(start, start + n, chunk):
        pipe = client.pipeline(transaction=False)
        for s in range(lo, min(lo + chunk, start + n)):
            pipe.xadd(
                M.train_key(run),
                {
                    "step": s,
                    "loss": float(rng.random()),
                    "cos_ap": 0.6,
                    "cos_an": 0.3,
                    "active": 0.4,
                    "lr": 1e-3,
                    "step_s": 0.05,
                    "wait_s": 0.001,
                    "build_s": 0.002,
                    "queue_depth": 5,
                },
                maxlen=2_000_000,
            )
        pipe.execute()


def draw(s: RunSeries) -> None:
    """Build every figure and serialise it as Dash would send it."""
    figs = [
        F.loss_figure(s),
        F.similarity_figure(s, 0.1),
        F.eer_figure(s),
        F.timing_figure(s),
        F.producers_figure(s),
    ]
    json.dumps([F.summary_line(s), *figs], cls=plotly.utils.PlotlyJSONEncoder)


def measure(client, run: str, n: int) -> dict:
    fill(client, run, 1, n)
    s = RunSeries(run)
    t0 = time.perf_counter()
    s.refresh(client)
    draw(s)
    first = time.perf_counter() - t0
    ticks = []
    for i in range(5):
        fill(client, run, n + 1 + 10 * i, 10)
        t0 = time.perf_counter()
        s.refresh(client)
        draw(s)
        ticks.append(time.perf_counter() - t0)
    return {
        "first_load_s": round(first, 3),
        "refresh_ms": round(1000 * median(ticks), 1),
        "points": s.steps(),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(tmp)
        url = server.start()
        client = M.connect(url, timeout=60)
        small = measure(client, "bench-10k", 10_000)
        print(f"10k: {small}; writing 1M points ...", file=sys.stderr)
        large = measure(client, "bench-1m", 1_000_000)
        server.stop()
    report(
        {
            "bench": "dashboard",
            "points_10k": small,
            "points_1m": large,
            "max_points_drawn_per_series": F.MAX_POINTS,
        }
    )


if __name__ == "__main__":
    main()
