"""Batches per second delivered to a consuming learner process with 1, 2 and 4 producers,
base preset (32 triplets x 400 frames), features from the cache and computed live, in one run.

    python bench/scaling.py [--seconds 10]

docs/operations.md turns these figures into the number of producer cores a GPU learner
needs at the base preset.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import base_on_feature_cache, fill_cache, quiet_ray_env, report  # noqa: E402
from bench.producers import throughput  # noqa: E402
from cluster.config import replace  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    quiet_ray_env()
    figures: dict = {"bench": "scaling", "cores": os.cpu_count(), "preset": "base"}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VE_CACHE_DIR"] = cache
        cfg = base_on_feature_cache(cache)
        fill_cache(cfg)
        import ray

        from cluster.ray_session import init_ray

        init_ray(num_cpus=4)  # 4 logical CPUs so 4 producers can be placed on 2 cores
        for mode, run_cfg in (
            ("cached", cfg),
            ("live", replace(cfg, data={"feature_cache": "off"})),
        ):
            for n in (1, 2, 4):
                r = throughput(run_cfg, n, a.seconds, f"scale-{mode}-{n}")
                figures[f"{mode}_{n}_producers_batches_per_s"] = r["batches_per_s"]
                print(f"{mode} x{n}: {r}", file=sys.stderr)
        ray.shutdown()
    for mode in ("cached", "live"):
        one = figures[f"{mode}_1_producers_batches_per_s"]
        figures[f"{mode}_speedup_2"] = round(figures[f"{mode}_2_producers_batches_per_s"] / one, 2)
        figures[f"{mode}_speedup_4"] = round(figures[f"{mode}_4_producers_batches_per_s"] / one, 2)
    report(figures)


if __name__ == "__main__":
    main()
