"""Producer side, measured in one run on the shared speech set (features cached first):

- build: median time to build one 32-triplet batch of 400-frame segments from the cache, one core;
- throughput: batches per second delivered to a consuming process by one and by two producers;
- latency: median time for one batch to go from a producer process, through the queue, into the
  consuming process (float16 and float32 features).

    python bench/producers.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    SHARED_SPEECH,
    base_on_feature_cache,
    fill_cache,
    median,
    one_core,
    quiet_ray_env,
    report,
    timeit,
)
from cluster.config import load_config, replace  # noqa: E402


def build_time(cfg) -> float:
    from workers.batches import BatchBuilder
    from workers.rundata import RunData
    from workers.sampler import TripletSampler

    fill_cache(cfg)  # what workers.precompute does, in-process
    data = RunData.open(replace(cfg, data={"feature_cache": "read"}).data, cfg.synthetic)
    reader = data.source(cfg.features)  # a fresh reader, as a producer would be
    sampler = TripletSampler(data.db, triplets=32, seed=0)
    builder = BatchBuilder(sampler, reader, frames=400, features=cfg.features)
    return median(timeit(builder.build, repeat=50, warmup=3))


def throughput(cfg, producers: int, seconds: float, run_id: str) -> dict:
    import ray

    from cluster.queue import BatchStream, StreamStats, create_queue
    from cluster.run_registry import create_registry
    from workers.pool import start_producers, stop_producers

    registry = create_registry(run_id, cfg.to_dict(), "")
    queue = create_queue(run_id, cfg.producer.queue_size)
    start_producers(cfg, run_id, producers, registry=registry)
    stream = BatchStream(queue, prefetch=2)
    for _ in range(5):  # warm up: actors started, caches mapped
        next(stream)
    stream.stats = StreamStats()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        next(stream)
        n += 1
    elapsed = time.perf_counter() - t0
    stop_producers(run_id)
    stream.stop()
    ray.kill(queue.actor)
    return {
        "batches_per_s": round(n / elapsed, 2),
        "consumer_wait_share": round(stream.stats.wait_seconds / (elapsed + 1e-9), 3),
    }


def latency(cfg, run_id: str, n: int = 40) -> float:
    """One batch at a time, consumer already waiting: no queueing delay in the figure."""
    import ray

    from cluster.queue import BatchStream, create_queue
    from cluster.run_registry import create_registry
    from workers.pool import ProducerActor, stop_producers

    registry = create_registry(run_id, cfg.to_dict(), "")
    queue = create_queue(run_id, 4)
    actor = (
        ray.remote(ProducerActor)
        .options(num_cpus=1, max_concurrency=2)
        .remote(cfg.to_dict(), run_id, 0)
    )
    registry.register_producer.remote(0, "")
    stream = BatchStream(queue, prefetch=1)
    times = []
    for i in range(n + 3):
        actor.run.remote(max_batches=1)
        batch = next(stream)
        arrived = time.time()
        if i >= 3:
            times.append(arrived - batch.created_at)
    ray.kill(actor)
    stop_producers(run_id)
    ray.kill(queue.actor)
    return median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=15.0)
    a = p.parse_args()
    quiet_ray_env()
    one_core()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VE_CACHE_DIR"] = cache
        cfg = base_on_feature_cache(cache)
        t_build = build_time(cfg)

        import ray

        from cluster.ray_session import init_ray

        init_ray(num_cpus=2, quiet=False)
        print(f"build {1000 * t_build:.2f} ms; one producer ...", file=sys.stderr)
        one = throughput(cfg, 1, a.seconds, "bench-1")
        print(f"one: {one}; two producers ...", file=sys.stderr)
        two = throughput(cfg, 2, a.seconds, "bench-2")
        print(f"two: {two}; without the feature cache ...", file=sys.stderr)
        live = replace(cfg, data={"feature_cache": "off"})
        one_live = throughput(live, 1, a.seconds, "bench-1l")
        two_live = throughput(live, 2, a.seconds, "bench-2l")
        print(f"live: {one_live} {two_live}; latency ...", file=sys.stderr)
        lat16 = latency(cfg, "bench-l16")
        cfg32 = load_config(
            "base",
            [
                f"data.path={SHARED_SPEECH}",
                f"data.cache_dir={cache}",
                "features.dtype=float32",
                "augment.enabled=false",
            ],
        )
        build_time(cfg32)  # fill the float32 cache too
        lat32 = latency(cfg32, "bench-l32")
        ray.shutdown()
    mb16 = 96 * 400 * 64 * 2 / 2**20
    report(
        {
            "bench": "producers",
            "cores": os.cpu_count(),
            "batch": "32 triplets x 400 frames x 64 mels",
            "build_ms_from_cache_median": round(1000 * t_build, 2),
            "one_producer_batches_per_s": one["batches_per_s"],
            "two_producers_batches_per_s": two["batches_per_s"],
            "two_vs_one": round(two["batches_per_s"] / one["batches_per_s"], 2),
            "consumer_wait_share_two": two["consumer_wait_share"],
            "no_cache_one_producer_batches_per_s": one_live["batches_per_s"],
            "no_cache_two_producers_batches_per_s": two_live["batches_per_s"],
            "no_cache_two_vs_one": round(two_live["batches_per_s"] / one_live["batches_per_s"], 2),
            "latency_ms_median_float16": round(1000 * lat16, 2),
            "latency_ms_median_float32": round(1000 * lat32, 2),
            "batch_mb_float16": round(mb16, 2),
            "batch_mb_float32": round(2 * mb16, 2),
            "np": np.__version__,
        }
    )


if __name__ == "__main__":
    main()
