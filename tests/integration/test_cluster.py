"""Integration: a multi-node Ray cluster on this machine; placement, cross-node batches, faults.

Three raylets (ray.cluster_utils.Cluster): a head node with one CPU and the custom
`learner` resource, and two 1-CPU producer nodes, each with its own object store.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from cluster.config import load_config
from cluster.queue import create_queue
from cluster.ray_session import NAMESPACE
from cluster.run_registry import create_registry
from learner.actor import LearnerActor
from learner.launch import learner_options
from workers.pool import start_producers, stop_producers

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_ray_config_is_valid_for_the_cluster_launcher():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "ray_config.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["resources"]
    assert head["GPU"] >= 1 and head["learner"] == 1
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all("learner" not in t["resources"] for t in workers)
    assert all(t["max_workers"] >= t["min_workers"] for t in workers)
    assert any("pip install" in c for c in cfg["setup_commands"])
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["producer_cpu"]["max_workerz"] = 3
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(prepare_config(broken))


@pytest.fixture(scope="module")
def cluster(synthetic_root):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"learner": 1}})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, namespace=NAMESPACE)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def node_of(handle) -> str:
    return ray.get(handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def pid_of(handle) -> int:
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    cfg = load_config(
        "smoke",
        [
            "learner.eval_every=0",
            "learner.checkpoint_every=0",
            "learner.max_steps=100000",
            "producer.queue_size=4",
        ],
    )
    run_id = "multi"
    registry = create_registry(run_id, cfg.to_dict(), "")
    queue = create_queue(run_id, cfg.producer.queue_size)
    learner = (
        ray.remote(LearnerActor)
        .options(**learner_options(cfg))
        .remote(cfg.to_dict(), str(tmp_path_factory.mktemp("run")), run_id, "cpu")
    )
    ray.get(learner.info.remote())
    producers = start_producers(cfg, run_id, 2, registry=registry)
    yield cfg, learner, producers, queue
    stop_producers(run_id)


def test_placement_by_resources_and_batches_cross_nodes(cluster, run):
    c, workers = cluster
    _, learner, producers, _ = run
    head = c.head_node.node_id
    assert node_of(learner) == head  # the only node with the `learner` resource
    nodes = {node_of(p) for p in producers}
    assert nodes == {w.node_id for w in workers}  # spread, one per producer node
    summary = ray.get(learner.train.remote(6), timeout=120)
    assert summary["step"] == 6
    # One producer may fill the small queue before the other has started; the counts are
    # cumulative, so train on until both nodes have delivered (or give up after 60 steps).
    while set(summary["stream"]["per_worker"]) != {0, 1} and summary["step"] < 60:
        summary = ray.get(learner.train.remote(6), timeout=120)
    assert set(summary["stream"]["per_worker"]) == {0, 1}  # both remote nodes fed the learner


def test_killed_producer_is_restarted_and_training_continues(run):
    _, learner, producers, _ = run
    victim = producers[0]
    old = pid_of(victim)
    os.kill(old, signal.SIGKILL)
    start = ray.get(learner.train.remote(1), timeout=60)["step"]
    summary = ray.get(learner.train.remote(6), timeout=120)  # the queue never deadlocks
    assert summary["step"] == start + 6
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if pid_of(victim) != old:
                break
        except ray.exceptions.RayActorError:
            time.sleep(0.5)
    assert pid_of(victim) != old  # Ray restarted it in a new process
    ray.get(learner.train.remote(6), timeout=120)
    deadline = time.time() + 30
    while time.time() < deadline and ray.get(victim.stats.remote())["built"] == 0:
        time.sleep(0.5)
    assert ray.get(victim.stats.remote())["built"] > 0  # and its loop runs again


def test_stalled_learner_blocks_producers_with_bounded_memory(run):
    cfg, learner, producers, queue = run
    deadline = time.time() + 60  # the learner is idle between calls: producers fill the queue
    while time.time() < deadline and queue.qsize() < cfg.producer.queue_size:
        time.sleep(0.25)
    time.sleep(0.5)  # a producer that had a batch in hand is now blocked putting it
    built = [ray.get(p.stats.remote())["built"] for p in producers]
    rss = [psutil.Process(pid_of(p)).memory_info().rss for p in producers]
    time.sleep(4)
    assert queue.qsize() == cfg.producer.queue_size
    assert [ray.get(p.stats.remote())["built"] for p in producers] == built  # blocked on put
    grown = [
        psutil.Process(pid_of(p)).memory_info().rss - r for p, r in zip(producers, rss, strict=True)
    ]
    assert max(grown) < 20 * 2**20
    assert all(ray.get(p.stats.remote())["blocked_seconds"] > 3 for p in producers)


def test_a_node_leaving_takes_only_its_producers(cluster, run):
    c, workers = cluster
    _, learner, producers, _ = run
    gone = workers[1]
    survivors = [p for p in producers if node_of(p) != gone.node_id]
    c.remove_node(gone)
    summary = ray.get(learner.train.remote(8), timeout=180)
    assert summary["step"] > 0
    for p in survivors:
        assert ray.get(p.stats.remote(), timeout=30)["built"] > 0
    assert node_of(learner) == c.head_node.node_id
