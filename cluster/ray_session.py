"""Start a local Ray instance or join a cluster, the same way from every entry point.

init_ray()                       # a private local instance (all CPUs)
init_ray("auto")                 # join the cluster of this machine (ray up)
producers = spare_cpus()         # CPUs left after the learner's one
"""

from __future__ import annotations

import logging
import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

log = logging.getLogger(__name__)

NAMESPACE = "voice-embeddings"  # every named actor of every run lives here


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> None:
    """Connect once per process. ``address=None`` starts a private local instance;
    ``"auto"`` joins the cluster this machine belongs to (``ray start`` / ``ray up``)."""
    if ray.is_initialized():
        return
    # The dashboard and usage stats open ports and phone home; a training run needs neither.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict = {"namespace": NAMESPACE, "log_to_driver": not quiet or address is not None}
    if address:
        kwargs["address"] = address
    else:
        # "local": a new instance even when another run's (or `ray start`'s) is up on this
        # machine; plain ray.init() would join that one and refuse num_cpus.
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False)
    ray.init(**kwargs)
    log.info("ray: %s", ray.cluster_resources())


def spare_cpus(reserved: float = 1.0) -> int:
    """CPUs of the cluster not held back for the learner; at least one."""
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int(total - reserved))


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """Pin an actor to the driver's node: the run's bookkeeping must not leave with a worker node."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
