"""The run's registry: what a process joining a running run needs to know.

A named actor beside the queue, pinned to the driver's node. It hands out
worker ids, the run's config and Redis URL, and the sampler states a resumed
run restores, so ``python -m workers`` on any machine can add producers.

    registry = create_registry(run_id, cfg.to_dict(), str(run.path))   # the driver
    registry = attach_registry(run_id)                                 # anyone else
    ids = ray.get(registry.reserve_worker_ids.remote(2))
"""

from __future__ import annotations

import time
from typing import Any

import ray

from cluster.ray_session import NAMESPACE, on_this_node

QUARANTINE_STRIKES = 2  # a file whose decoding killed producers this often is skipped


def quarantined_of(strikes: dict[str, int]) -> list[str]:
    """The files of ``strikes`` (file -> producer deaths while decoding it) that are skipped."""
    return sorted(k for k, n in strikes.items() if n >= QUARANTINE_STRIKES)


def registry_name(run_id: str) -> str:
    return f"registry-{run_id}"


class RunRegistry:
    """What a process joining a run needs: its config and unique worker ids.

    A plain class; :func:`create_registry` makes it a named actor.
    """

    def __init__(
        self,
        run_id: str,
        config: dict[str, Any],
        run_dir: str,
        sampler_states: dict[str, str] | None = None,
        redis_url: str = "",
    ) -> None:
        self.run_id = run_id
        self.redis_url = redis_url  # kept in memory only: it may hold a password
        self._sampler_states = dict(sampler_states or {})
        self.config = config
        self.run_dir = run_dir
        self.created_at = time.time()
        self._next_worker = 0
        self._producers: dict[int, str] = {}
        self._starts: dict[int, int] = {}
        self._decoding: dict[int, str] = {}  # worker id -> file it is decoding now
        self._strikes: dict[str, int] = {}  # file -> producer deaths while decoding it

    def info(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "config": self.config,
            "run_dir": self.run_dir,
            "created_at": self.created_at,
        }

    def metrics_url(self) -> str:
        """The Redis URL every process of the run writes metrics to ('' for none)."""
        return self.redis_url

    def reserve_worker_ids(self, n: int) -> list[int]:
        ids = list(range(self._next_worker, self._next_worker + n))
        self._next_worker += n
        return ids

    def take_sampler_state(self, worker_id: int) -> str | None:
        """A resumed run's saved sampler state for this worker id, handed out once."""
        return self._sampler_states.pop(str(worker_id), None)

    def count_start(self, worker_id: int) -> int:
        """How often this worker id started before (0 the first time); producers seed by it.

        A restart of a worker that died while decoding a file is a strike against the file.
        """
        n = self._starts.get(worker_id, 0)
        self._starts[worker_id] = n + 1
        key = self._decoding.pop(worker_id, None)
        if n and key is not None:
            self._strikes[key] = self._strikes.get(key, 0) + 1
        return n

    def decoding(self, worker_id: int, key: str) -> bool:
        """A producer is about to decode ``key``; False when the file is quarantined."""
        if self._strikes.get(key, 0) >= QUARANTINE_STRIKES:
            return False
        self._decoding[worker_id] = key
        return True

    def decoded(self, worker_id: int) -> None:
        self._decoding.pop(worker_id, None)

    def strikes(self) -> dict[str, int]:
        """Files that were being decoded when a producer died, and how often."""
        return dict(self._strikes)

    def quarantined(self) -> list[str]:
        return quarantined_of(self._strikes)

    def register_producer(self, worker_id: int, actor_name: str) -> None:
        self._producers[worker_id] = actor_name

    def unregister_producer(self, worker_id: int) -> None:
        self._producers.pop(worker_id, None)

    def producers(self) -> dict[int, str]:
        return dict(self._producers)


def create_registry(run_id: str, *args: Any, **kwargs: Any) -> Any:
    """The run's :class:`RunRegistry` (same arguments) as a named actor on this node."""
    return (
        ray.remote(RunRegistry)
        .options(
            name=registry_name(run_id),
            namespace=NAMESPACE,
            num_cpus=0,
            scheduling_strategy=on_this_node(),
        )
        .remote(run_id, *args, **kwargs)
    )


def attach_registry(run_id: str) -> Any:
    try:
        return ray.get_actor(registry_name(run_id), namespace=NAMESPACE)
    except ValueError:
        raise LookupError(f"no running run {run_id!r} in this Ray cluster") from None
