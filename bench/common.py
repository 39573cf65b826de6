"""Helpers shared by the benchmarks: one-core pinning, timing, the JSON last line."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPEECH = ROOT.parent / "shared" / "data" / "speech"
SHARED_NOISE = ROOT.parent / "shared" / "data" / "noise"


def one_core() -> None:
    """Pin BLAS/OpenMP pools to one thread so both sides of a comparison get one core."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(figures: dict) -> None:
    """Print the figures as one JSON object on the last line."""
    sys.stdout.flush()
    print(json.dumps(figures, sort_keys=False), flush=True)


def quiet_ray_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def base_on_feature_cache(cache: str):
    """The base preset on the shared speech set, read through the feature cache in ``cache``
    (augmentation off: bench/augment.py measures the augmenting path)."""
    from cluster.config import load_config

    return load_config(
        "base",
        [
            f"data.path={SHARED_SPEECH}",
            f"data.cache_dir={cache}",
            "producer.queue_size=8",
            "augment.enabled=false",
        ],
    )


def fill_cache(cfg) -> None:
    """Extract every utterance of the run's corpus into the feature cache (in-process)."""
    import contextlib

    from cluster.config import replace
    from workers.audio import AudioError
    from workers.rundata import RunData

    data = RunData.open(replace(cfg, data={"feature_cache": "readwrite"}).data, cfg.synthetic)
    source = data.source(cfg.features, memory_bytes=0)
    for i in range(len(data.db.utterances)):
        with contextlib.suppress(AudioError):  # unusable files are recorded in the cache
            source.get(i)
