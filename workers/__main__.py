"""Attach producers to a running run, or take them away, from any machine of the cluster.

Examples:
    python -m workers --run 20261124-073721-3f9a --count 4 --address auto
    python -m workers --run 20261124-073721-3f9a --remove 2 --address auto
    python -m workers --run 20261124-073721-3f9a --list --address auto

Added producers are detached Ray actors: they outlive this command and stop by
themselves when the run ends. They read the corpus at the path in the run's
config (``--data`` to say where it is mounted on this machine's nodes).
"""

from __future__ import annotations

import argparse
import logging
import sys

import ray

from cluster.config import ConfigError, config_from_dict, replace
from cluster.ray_session import init_ray
from cluster.run_registry import attach_registry
from workers.pool import start_producers, stop_producers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run id (the name of runs/<run-id>)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--count", type=int, help="producers to add")
    g.add_argument("--remove", type=int, help="producers to stop (newest first)")
    g.add_argument("--list", action="store_true", help="list the run's producers")
    p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    p.add_argument("--data", default=None, help="corpus path on the producers' nodes")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    run_id = a.run.rstrip("/").split("/")[-1]  # accept runs/<id> too
    try:
        init_ray(a.address)
    except ConnectionError as exc:
        print(f"error: cannot reach a Ray cluster at {a.address!r}: {exc}", file=sys.stderr)
        return 2
    try:
        registry = attach_registry(run_id)
        info = ray.get(registry.info.remote())
        if a.list:
            for wid, name in sorted(ray.get(registry.producers.remote()).items()):
                print(f"{wid}\t{name}")
            return 0
        if a.remove is not None:
            print(f"stopped producers {stop_producers(run_id, a.remove)} of run {run_id}")
            return 0
        if a.count < 1:
            raise ConfigError("--count must be at least 1")
        cfg = config_from_dict(info["config"])
        if a.data:
            cfg = replace(cfg, data={"path": a.data})
        handles = start_producers(cfg, run_id, a.count, detached=True, registry=registry)
    except (LookupError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"added {len(handles)} producer(s) to run {run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
