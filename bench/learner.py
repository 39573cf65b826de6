"""Learner side, measured in one run on the shared speech set:

- overhead: a learner step fed from the Ray queue vs a bare compiled train step on one batch;
- starvation: the share of learner wall time spent waiting for data with one producer;
- the original notebook's breakdown (9 s building + 15 s training per 32-triplet batch on a
  CPU): build and train time per batch for the `base` and `demo` presets on this machine.

    python bench/learner.py [--steps 60] [--base-steps 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import SHARED_SPEECH, fill_cache, median, quiet_ray_env, report  # noqa: E402
from cluster.config import load_config, replace  # noqa: E402


def make_batches(cfg, n: int, cache: bool = True):
    """``n`` real batches from a producer (no Ray), and the median build time."""
    import queue

    from workers.producer import BatchProducer

    if not cache:
        cfg = replace(cfg, data={"feature_cache": "off"})
    q: queue.Queue = queue.Queue()
    p = BatchProducer.from_config(cfg, 0, q)
    p.run(max_batches=n)
    batches = [q.get() for _ in range(n)]
    return batches, median([b.build_seconds for b in batches[1:]] or [batches[0].build_seconds])


def bare_step_seconds(cfg, batch, steps: int) -> float:
    from learner.train_step import TrainStep

    ts = TrainStep(cfg)
    ts(batch.features, batch.speakers)  # trace and compile
    t0 = time.perf_counter()
    for _ in range(steps):
        ts(batch.features, batch.speakers)
    return (time.perf_counter() - t0) / steps


def overhead(cfg, batch, steps: int, rounds: int = 4) -> dict:
    """Bare compiled steps and queue-fed learner steps, measured in alternating blocks
    (this machine is noisy: back-to-back blocks see the same background load)."""
    import ray

    from cluster.queue import BatchStream, create_queue
    from cluster.run_registry import create_registry
    from learner.learner import Learner
    from learner.train_step import TrainStep
    from workers.pool import start_producers, stop_producers

    registry = create_registry("bench-learner", cfg.to_dict(), "")
    queue = create_queue("bench-learner", cfg.producer.queue_size)
    start_producers(cfg, "bench-learner", 1, registry=registry)
    stream = BatchStream(queue, prefetch=cfg.learner.prefetch)
    learner = Learner(cfg)
    learner.fit(stream, steps=3)  # compile, fill the queue
    bare = TrainStep(cfg)
    bare(batch.features, batch.speakers)
    block = max(1, steps // rounds)
    bare_t, fed_t, wait, fed_wall = [], [], 0.0, 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(block):
            bare(batch.features, batch.speakers)
        bare_t.append((time.perf_counter() - t0) / block)
        w0 = learner.totals["wait"]
        t0 = time.perf_counter()
        learner.fit(stream, steps=block)
        took = time.perf_counter() - t0
        fed_t.append(took / block)
        wait += learner.totals["wait"] - w0
        fed_wall += took
    stop_producers("bench-learner")
    ray.kill(queue.actor)
    return {"bare": median(bare_t), "fed": median(fed_t), "wait_share": wait / fed_wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--base-steps", type=int, default=2)
    a = p.parse_args()
    quiet_ray_env()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VE_CACHE_DIR"] = cache
        common = [
            f"data.path={SHARED_SPEECH}",
            f"data.cache_dir={cache}",
            "data.eval_fraction=0",
            "learner.eval_every=0",
            "learner.checkpoint_every=0",
            "learner.max_steps=1000000",
            # The triplet step from cached features: base's classifier and augmentation apart.
            "learner.loss=triplet",
            "augment.enabled=false",
        ]
        demo = load_config("demo", common)
        base = load_config("base", common)

        # The notebook's breakdown: live features (as the notebook computed them), then cached.
        demo_live, demo_build_live = make_batches(demo, 4, cache=False)
        fill_cache(demo)  # base and demo share the feature spec: one cache serves both
        _, demo_build = make_batches(demo, 12)
        demo_step = bare_step_seconds(demo, demo_live[0], 10)
        base_live, base_build_live = make_batches(base, 3, cache=False)
        _, base_build = make_batches(base, 8)
        print("timing a base step (24 M parameters) on this CPU ...", file=sys.stderr)
        base_step = bare_step_seconds(base, base_live[0], a.base_steps)

        import ray

        from cluster.ray_session import init_ray

        init_ray(num_cpus=2)
        o = overhead(demo, demo_live[0], a.steps)
        with contextlib.suppress(Exception):
            ray.shutdown()
    report(
        {
            "bench": "learner",
            "cores": os.cpu_count(),
            "preset_for_overhead": "demo",
            "bare_step_ms": round(1000 * o["bare"], 1),
            "queue_fed_step_ms": round(1000 * o["fed"], 1),
            "overhead_ratio": round(o["fed"] / o["bare"], 3),
            "wait_share_one_producer": round(o["wait_share"], 4),
            "notebook_build_s": 9.0,
            "notebook_train_s": 15.0,
            "base_build_s_live_features": round(base_build_live, 3),
            "base_build_s_cached": round(base_build, 4),
            "base_train_step_s": round(base_step, 2),
            "demo_build_s_live_features": round(demo_build_live, 3),
            "demo_build_s_cached": round(demo_build, 4),
            "demo_train_step_s": round(demo_step, 3),
            "np": np.__version__,
        }
    )


if __name__ == "__main__":
    main()
