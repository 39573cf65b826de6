"""Integration: a real local Ray instance, producers as actors, the named bounded queue."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray

from cluster.config import DataConfig, load_config, replace
from cluster.queue import BatchStream, attach_queue, create_queue
from cluster.ray_session import init_ray
from cluster.run_registry import create_registry
from workers.cache import FeatureStore
from workers.corpus import SpeakerDatabase
from workers.extract import LogMelExtractor
from workers.pool import start_producers, stop_producers
from workers.precompute import precompute

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    init_ray(num_cpus=4)
    yield
    ray.shutdown()


def new_run(cfg, run_id):
    registry = create_registry(run_id, cfg.to_dict(), "/nonexistent")
    queue = create_queue(run_id, cfg.producer.queue_size)
    return registry, queue


def test_two_producers_fill_the_queue_with_valid_batches(ray_session, speech_subset):
    cfg = load_config(
        "smoke",
        [
            f"data.path={speech_subset}",
            "producer.queue_size=6",
            "sampler.triplets=8",
            "sampler.frames=100",
        ],
    )
    registry, queue = new_run(cfg, "t-two")
    start_producers(cfg, "t-two", 2, registry=registry)
    deadline = time.time() + 120
    while queue.qsize() < 6 and time.time() < deadline:
        time.sleep(0.2)
    assert queue.qsize() == 6  # full: producers are now blocked, not growing memory
    time.sleep(1.0)
    assert queue.qsize() == 6
    stream = BatchStream(queue, prefetch=2)
    seen = set()
    for _ in range(20):
        batch = next(stream).validate(
            spec=cfg.features.fingerprint(), triplets=8, frames=100, n_mels=64
        )
        assert batch.features.dtype == np.float16
        seen.add(batch.worker_id)
    assert seen == {0, 1}
    assert stream.stats.batches == 20 and stream.stats.lost == 0
    assert set(ray.get(registry.producers.remote())) == {0, 1}
    assert stop_producers("t-two") == [1, 0]
    assert ray.get(registry.producers.remote()) == {}


def test_queue_is_found_by_run_id(ray_session):
    owner = create_queue("t-named", 3)  # a named actor lives while its creator holds it
    q = attach_queue("t-named")
    assert q.actor._actor_id == owner.actor._actor_id
    assert q.maxsize == 3
    q.put("x")
    assert q.get() == "x"
    with pytest.raises(LookupError, match="no running run 't-missing'"):
        attach_queue("t-missing")


def test_the_ray_queue_internals_we_use_are_still_there(ray_session):
    """``cluster.queue.RayQueueInternals`` reaches inside ``ray.util.queue.Queue``; a Ray
    upgrade that moves any of it fails here, naming the piece, not somewhere in training."""
    import inspect

    from ray.util.queue import Queue

    from cluster.queue import RayQueueInternals

    owner = create_queue("t-internals", 2)
    assert hasattr(owner, "actor") and owner.maxsize == 2, "Queue lost .actor or .maxsize"
    params = inspect.signature(Queue.__init__).parameters
    assert {"maxsize", "actor_options"} <= set(params), "Queue(maxsize, actor_options) changed"
    q = RayQueueInternals.of_actor(owner.actor)
    assert q.maxsize == 2, "the queue actor has no .maxsize"
    assert ray.get(RayQueueInternals.size_ref(q)) == 0, "the queue actor has no qsize()"
    pending = RayQueueInternals.get_ref(q)  # asked before anything is there: it waits
    assert ray.wait([pending], timeout=0.2)[0] == [], "the actor's get(None) did not block"
    q.put("x")
    assert ray.get(pending, timeout=10) == "x", "the actor's get(timeout) changed"
    assert ray.get(RayQueueInternals.size_ref(q)) == 0  # the waiting get took it
    q.put("y")  # nobody waiting: it stays
    assert ray.get(RayQueueInternals.size_ref(q)) == 1


def test_workers_cli_attaches_and_removes(ray_session, synthetic_root):
    from workers.__main__ import main

    cfg = load_config("smoke")
    registry, queue = new_run(cfg, "t-cli")
    assert main(["--run", "runs/t-cli", "--count", "2"]) == 0
    batch = next(BatchStream(queue, prefetch=1))
    batch.validate(spec=cfg.features.fingerprint())
    assert len(ray.get(registry.producers.remote())) == 2
    assert main(["--run", "t-cli", "--remove", "1"]) == 0
    assert list(ray.get(registry.producers.remote())) == [0]
    assert main(["--run", "t-nope", "--count", "1"]) == 2
    stop_producers("t-cli")


def test_precompute_is_parallel_resumable_and_complete(ray_session, speech_subset, tmp_path):
    cfg = load_config("smoke").features
    db = SpeakerDatabase.scan(speech_subset)
    store = FeatureStore.of(db.root, LogMelExtractor(cfg), str(tmp_path))
    # Pretend an earlier run was killed after two files.
    first = precompute(db.subset(db.speakers[:1]), cfg, str(tmp_path), progress=False)
    assert first["done"] == len(db.by_speaker[db.speakers[0]])
    totals = precompute(db, cfg, str(tmp_path), chunk=8, progress=False)
    assert totals["already"] == first["done"]
    assert totals["already"] + totals["done"] == len(db.utterances)
    assert all(store.status(u) == "done" for u in db.utterances)
    assert not list(store.root.glob(".*tmp*"))
    again = precompute(db, cfg, str(tmp_path), progress=False)
    assert again == {"already": len(db.utterances), "done": 0}
    # A producer reading this cache computes nothing itself.
    from workers.producer import BatchProducer

    run_cfg = replace(
        load_config("smoke"), data={"path": str(speech_subset), "cache_dir": str(tmp_path)}
    )
    import queue as std_queue

    producer = BatchProducer.from_config(run_cfg, 0, std_queue.Queue(100))
    producer.run(max_batches=5)
    assert producer.source.computed == 0


def test_precompute_in_shards_is_resumable_and_producers_read_it(
    ray_session, speech_subset, tmp_path
):
    """``--shards``: a shard per task instead of a file per utterance; a second pass finds
    everything; a producer reading the cache computes nothing itself."""
    cfg = load_config("smoke").features
    db = SpeakerDatabase.scan(speech_subset)
    first = precompute(db.subset(db.speakers[:2]), cfg, str(tmp_path), progress=False, shards=5)
    totals = precompute(db, cfg, str(tmp_path), progress=False, shards=5)
    assert totals["already"] == first["done"]
    assert totals["already"] + totals["done"] == len(db.utterances)
    store = FeatureStore.of(db.root, LogMelExtractor(cfg), str(tmp_path))
    assert all(store.status(u) == "done" for u in db.utterances)
    assert not list(store.root.glob("*.npy"))  # in shards only
    shards = list((store.root / "shards").glob("*.json"))
    assert len(shards) == -(-first["done"] // 5) + -(-totals["done"] // 5)
    assert precompute(db, cfg, str(tmp_path), progress=False, shards=5)["done"] == 0
    from workers.producer import BatchProducer

    run_cfg = replace(
        load_config("smoke"), data={"path": str(speech_subset), "cache_dir": str(tmp_path)}
    )
    import queue as std_queue

    producer = BatchProducer.from_config(run_cfg, 0, std_queue.Queue(100))
    producer.run(max_batches=5)
    assert producer.source.computed == 0


def test_precompute_fills_the_speech_cache_augmenting_producers_read(
    ray_session, speech_subset, tmp_path
):
    from workers.extract import SpeechExtractor
    from workers.rundata import RunData

    cfg = load_config("smoke").features
    db = SpeakerDatabase.scan(speech_subset)
    totals = precompute(db, cfg, str(tmp_path), progress=False, waves=True)
    assert totals == {"already": 0, "done": len(db.utterances)}
    assert not (tmp_path / "features").exists()  # the feature cache is not what was filled
    data = RunData.of(db, DataConfig(cache_dir=str(tmp_path), feature_cache="read"))
    source = data.waves(cfg)
    speech = SpeechExtractor(cfg)
    for i in (0, len(db.utterances) - 1):
        want = speech(db.abspath(i), db.utterances[i].seconds)
        np.testing.assert_array_equal(source.get(i), want)
    assert source.computed == 0  # read from the cache, decoded by nobody here


def test_autoscaler_adds_a_producer_when_the_learner_starves(ray_session, redis_server):
    from cluster import metrics as M
    from cluster.metrics import MetricsWriter
    from workers.scaling import Autoscaler

    _, url = redis_server
    cfg = load_config("smoke", ["producer.autoscale_wait_share=0.2"])
    registry, queue = new_run(cfg, "t-scale")
    writer = MetricsWriter(url, "t-scale", "driver")
    scaler = Autoscaler(cfg, "t-scale", 0, registry, writer, patience=2)
    totals = {"wait": 0.0, "step": 0.0}
    busy = [(0.05, 1.0), (0.05, 1.0)]  # 5% waiting: nothing happens
    starved = [(1.0, 1.0), (1.0, 1.0)]  # 50% waiting, twice: scale up
    decisions = []
    for wait, step in busy + starved:
        totals = {"wait": totals["wait"] + wait, "step": totals["step"] + step}
        decisions.append(scaler.observe(totals))
    assert decisions == [False, False, False, True]
    assert len(ray.get(registry.producers.remote())) == 1
    writer.close()
    events = M.connect(url).xrange(M.events_key("t-scale"))
    assert [e["kind"] for _, e in events] == ["scale"]
    stop_producers("t-scale")


def test_a_starved_learner_says_so_and_names_the_producers(ray_session, synthetic_root, tmp_path):
    """No batch within learner.data_timeout: train() ends with an error that says which
    producers answer, instead of waiting forever; stop() ends a waiting train() at once."""
    from learner.actor import LearnerActor
    from learner.launch import learner_options

    cfg = load_config("smoke", ["learner.data_timeout=3", "learner.eval_every=0"])
    registry, _ = new_run(cfg, "t-starve")
    registry.register_producer.remote(7, "producer-t-starve-7")  # registered, never started
    actor = (
        ray.remote(LearnerActor)
        .options(**dict(learner_options(cfg), num_cpus=0))
        .remote(cfg.to_dict(), str(tmp_path), "t-starve", "cpu")
    )
    t0 = time.time()
    with pytest.raises(ray.exceptions.RayTaskError) as err:
        ray.get(actor.train.remote(2), timeout=60)
    assert "starved at step 0" in str(err.value) and "not answering: [7]" in str(err.value)
    assert 3 <= time.time() - t0 < 30

    actor = (
        ray.remote(LearnerActor)
        .options(**dict(learner_options(cfg), num_cpus=0))
        .remote(
            replace(cfg, learner={"data_timeout": 0}).to_dict(), str(tmp_path), "t-starve", "cpu"
        )
    )
    waiting = actor.train.remote(2)  # no producers, no timeout: it would wait forever
    time.sleep(2)
    actor.stop.remote()
    assert ray.get(waiting, timeout=30)["step"] == 0  # returned, nothing trained
    assert ray.get(actor.save.remote("exit"), timeout=30)  # and the exit save is not stuck


def test_a_restarted_producer_does_not_replay_its_stream(ray_session, synthetic_root):
    import os
    import signal

    cfg = load_config("smoke", ["producer.queue_size=2"])
    registry, queue = new_run(cfg, "t-replay")
    (producer,) = start_producers(cfg, "t-replay", 1, registry=registry)
    stream = BatchStream(queue, prefetch=1)
    first = next(stream)
    assert first.seq == 0
    pid = ray.get(producer.__ray_call__.remote(lambda self: os.getpid()))
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 120
    while time.time() < deadline:  # the restarted instance starts again at seq 0
        batch = next(stream)
        if batch.created_at > first.created_at and batch.seq == 0:
            break
    else:
        pytest.fail("the restarted producer sent nothing")
    assert batch.features.shape == first.features.shape
    assert not np.array_equal(batch.features, first.features)  # a fresh stream, not a replay
    stop_producers("t-replay")


def test_a_file_that_kills_its_producer_twice_is_quarantined(ray_session, tmp_path):
    """Ray kills the producer while it decodes one long file (as the OOM killer would), twice:
    the file is quarantined and counted, and the restarted producer goes on without it."""
    from tests.fakes import write_wav

    rng = np.random.default_rng(3)
    for s, f0 in enumerate((110.0, 170.0, 240.0)):
        for u in range(2):
            write_wav(tmp_path / f"spk{s}" / f"u{u}.wav", 2.0, f0=f0, rng=rng)
    killer = "spk0/u1.wav"  # 40 minutes: decoded in blocks, long enough to be caught at it
    write_wav(tmp_path / killer, 2400.0, f0=110.0, rng=rng)
    cfg = load_config(
        "smoke",
        [
            f"data.path={tmp_path}",
            "data.feature_cache=off",
            "data.min_eval_speakers=0",
            "data.eval_fraction=0",
            "producer.queue_size=2",
            "sampler.triplets=4",
        ],
    )
    registry, queue = new_run(cfg, "t-killer")
    (producer,) = start_producers(cfg, "t-killer", 1, registry=registry)

    def decoding():
        return ray.get(registry.__ray_call__.remote(lambda self: dict(self._decoding)))

    for kill in range(2):
        deadline = time.time() + 120
        # the restarted instance (strike ``kill`` counted) is decoding the file again
        while (
            ray.get(registry.strikes.remote()).get(killer, 0) != kill or decoding().get(0) != killer
        ):
            assert time.time() < deadline, f"kill {kill}: the producer never decoded {killer}"
            time.sleep(0.02)
        ray.kill(producer, no_restart=False)  # Ray restarts it, as after an out-of-memory kill
    batch = BatchStream(queue, prefetch=1, timeout=120).__next__()
    assert batch.features.shape[0] == 12
    assert ray.get(registry.strikes.remote()) == {killer: 2}
    assert ray.get(registry.quarantined.remote()) == [killer]
    assert ray.get(producer.stats.remote())["rejected"] == {"quarantined": 1}
    stop_producers("t-killer")


def test_transcode_converts_voxceleb2_aac_to_flac_resumably(ray_session, speech_subset, tmp_path):
    from tests.fakes import to_m4a
    from workers.transcode import main as transcode_main
    from workers.transcode import plan, transcode

    src = tmp_path / "VoxCeleb2" / "dev" / "aac"
    speakers = sorted(d for d in speech_subset.iterdir() if d.is_dir())[:3]
    for s, folder in enumerate(speakers):
        for u, f in enumerate(sorted(folder.glob("*.flac"))):
            to_m4a(f, src / f"id0{s:04d}" / "vid-x_1" / f"{u + 1:05d}.m4a")
    broken = src / "id00000" / "vid-x_1" / "00009.m4a"
    broken.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)
    out = tmp_path / "flac"
    first = transcode(src.parents[1], out, workers=2, progress=False)
    assert first["files"] == 10 and first["done"] == 9 and first["failed"] == 1
    assert "00009.m4a" in (out / "transcode-skipped.tsv").read_text()
    converted = SpeakerDatabase.scan(out, use_cache=False)
    original = SpeakerDatabase.scan(src.parents[1], use_cache=False)
    assert converted.layout == "voxceleb" and converted.speakers == [
        "id00000",
        "id00001",
        "id00002",
    ]
    assert [u.path for u in converted.utterances][0] == "dev/aac/id00000/vid-x_1/00001.flac"
    assert sf_info_rate(converted) == {16000}
    for a, b in zip(converted.utterances, original.utterances, strict=True):
        assert abs(a.seconds - b.seconds) < 0.1

    # A run killed part way: a removed output and a stale temporary file; the rest is kept.
    (out / converted.utterances[0].path).unlink()
    (out / "dev/aac/id00001/vid-x_1/.00001.flac.123.tmp").write_bytes(b"half")
    again = transcode(src.parents[1], out, workers=1, progress=False)
    assert again["already"] == 8 and again["done"] == 1 and again["failed"] == 1
    assert len(plan(src.parents[1], out)) == 10
    assert transcode_main([str(tmp_path / "nothing-here"), str(out)]) == 2


def sf_info_rate(db) -> set[int]:
    return {u.sample_rate for u in db.utterances}
