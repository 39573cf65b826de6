"""The learner on lists of real batches: no retrace, timings, checkpoints, exact resume, faults."""

from __future__ import annotations

import math
import queue
import sys
import time

import numpy as np
import pytest

from cluster.config import load_config
from learner.checkpoint import CheckpointError, CheckpointManager, resolve
from learner.learner import ConstantFeatures, Learner, TrainingDiverged
from workers.producer import BatchProducer


@pytest.fixture(scope="module")
def cfg():
    return load_config(
        "smoke", ["learner.eval_every=0", "learner.checkpoint_every=4", "learner.max_steps=100"]
    )


@pytest.fixture(scope="module")
def batches(cfg, synthetic_root):
    q = queue.Queue()
    BatchProducer.from_config(cfg, 0, q).run(max_batches=8)
    return [q.get() for _ in range(8)]


def weights(learner):
    return [np.array(v.numpy()) for v in learner.model.variables]


def test_fit_traces_once_and_times_every_step(cfg, batches, tmp_path):
    learner = Learner(cfg, tmp_path)
    summary = learner.fit(batches[:6])
    assert summary["step"] == 6
    assert learner.train_step.tracing_count == 1  # same signature: never retraced
    rec = list(learner.recent)
    assert all(r["step_s"] > 0 and r["wait_s"] >= 0 and r["build_s"] > 0 for r in rec)
    assert all(math.isfinite(r["loss"]) for r in rec)
    assert learner.totals["steps"] == 6
    # Checkpoint every 4 steps: ckpt-4 written, and the worker's sampler state recorded.
    ckpt = CheckpointManager(tmp_path / "checkpoints").latest()
    assert ckpt.step == 4 and "0" in ckpt.state()["sampler_states"]


@pytest.mark.parametrize("norm", ["cmvn", "cmn", "gain"])
def test_mixed_precision_steps_keep_float32_embeddings(cfg, batches, tmp_path, norm):
    """The GPU's precision path, run on the CPU: float16 compute with loss scaling, the input
    normalisation and the embeddings in float32, a finite loss, weights that move."""
    import keras

    from cluster.config import replace

    mixed = replace(cfg, model={"input_norm": norm})
    try:
        learner = Learner(mixed, tmp_path, mixed=True)
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        before = weights(learner)
        learner.fit(batches[:2])
        assert all(math.isfinite(r["loss"]) for r in learner.recent)
        assert any(not np.array_equal(a, b) for a, b in zip(before, weights(learner), strict=True))
        model = learner.model
        if norm != "cmvn":  # built-in layers asked for float32 (cmvn's does it inside)
            assert model.get_layer("segment_mean").compute_dtype == "float32"
        if norm == "gain":
            assert model.get_layer("segment_level").compute_dtype == "float32"
        assert model.get_layer("stage1_conv").compute_dtype == "float16"
        assert learner.train_step.embed(batches[0].features[:3]).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_time_based_checkpoints(cfg, batches, tmp_path):
    from cluster.config import replace

    timed = replace(cfg, learner={"checkpoint_every": 0, "checkpoint_minutes": 1e-6})
    Learner(timed, tmp_path / "t").fit(batches[:3])
    reasons = [c.state()["reason"] for c in CheckpointManager(tmp_path / "t" / "checkpoints").all()]
    assert reasons == ["timed"] * 3  # every step is past a 60 microsecond interval
    never = replace(cfg, learner={"checkpoint_every": 0, "checkpoint_minutes": 0})
    Learner(never, tmp_path / "n").fit(batches[:3])
    assert CheckpointManager(tmp_path / "n" / "checkpoints").all() == []


def test_resume_is_exact(cfg, batches, tmp_path):
    straight = Learner(cfg, tmp_path / "a")
    straight.fit(batches[:8])
    first = Learner(cfg, tmp_path / "b")
    first.fit(batches[:4])  # writes ckpt-4
    resumed = Learner(cfg, tmp_path / "c")
    resumed.restore(resolve(tmp_path / "b"))
    assert resumed.step == 4
    resumed.fit(batches[4:8])
    for x, y in zip(weights(straight), weights(resumed), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    assert resumed.step == straight.step == 8


def test_other_feature_spec_and_corrupt_checkpoints_are_refused(cfg, batches, tmp_path):
    Learner(cfg, tmp_path).fit(batches[:4])
    ckpt = resolve(tmp_path)
    other = load_config("smoke", ["features.n_mels=40"])
    with pytest.raises(CheckpointError, match="feature spec"):
        Learner(other).restore(ckpt)
    (ckpt.path / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable weights.npz"):
        Learner(cfg).restore(ckpt)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cfg, batches, tmp_path):
    learner = Learner(cfg, tmp_path)
    learner.fit(batches[:4])
    good = resolve(tmp_path)
    var = learner.model.get_layer("embedding").kernel
    var.assign(np.full(var.shape, np.nan, dtype="float32"))
    with pytest.raises(TrainingDiverged, match="last good checkpoint is .*ckpt-00000004"):
        learner.fit(batches[4:6])
    assert learner.save("exit") is None  # never overwrite good weights with NaN
    assert [c.step for c in CheckpointManager(tmp_path / "checkpoints").all()] == [4]
    fresh = Learner(cfg)
    fresh.restore(good)
    assert all(np.isfinite(w).all() for w in weights(fresh))


def test_collapse_is_detected(cfg, batches, caplog):
    collapsed = load_config(
        "smoke",
        [
            "learner.lr=0",
            "learner.eval_every=0",
            "learner.checkpoint_every=0",
            "learner.max_steps=100",
        ],
    )
    learner = Learner(collapsed)
    dense = learner.model.get_layer("embedding")
    dense.kernel.assign(np.zeros(dense.kernel.shape, "float32"))
    dense.bias.assign(np.ones(dense.bias.shape, "float32"))
    learner.fit((batches * 3)[:22])
    assert learner.collapse.collapsed
    assert "embeddings have collapsed" in caplog.text


def test_steps_unsent_at_a_checkpoint_reach_the_store_after_a_resume(cfg, batches, tmp_path):
    """The CI failure of stop 13: a killed driver takes the embedded Redis with it (parent-death
    signal) while its learner lives on for a moment and writes one more checkpoint. The steps
    whose metrics could not be sent travel inside that checkpoint and reach the store when the
    run resumes from it: every step once, in order."""
    from urllib.parse import urlsplit

    from cluster import metrics as M
    from cluster.redis_server import EmbeddedRedis
    from cluster.series_rewind import resume_series

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    first = Learner(cfg, tmp_path / "run", metrics=M.MetricsWriter(url, "u", flush_interval=60))
    first.fit(batches[:4])  # ckpt-4: steps 1..4 sent before it exists
    server.stop()
    first.fit(batches[4:8])  # ckpt-8: Redis is gone, steps 5..8 are not in the store
    first.metrics._stop.set()  # the learner is killed: its writer never sends again
    first.metrics._wake.set()
    server.start(port=urlsplit(url).port)
    ckpt = CheckpointManager(tmp_path / "run" / "checkpoints").latest()
    assert ckpt.step == 8

    resume_series(M.connect(url), "u", ckpt.step, ckpt.state().get("unsent_metrics"))
    resumed = Learner(cfg, tmp_path / "run", metrics=M.MetricsWriter(url, "u"))
    resumed.restore(ckpt)
    resumed.fit(batches[:2])
    resumed.metrics.close()
    steps = [int(f["step"]) for _, f in M.connect(url).xrange(M.train_key("u"))]
    server.stop()
    assert steps == list(range(1, 11))


def test_a_time_budget_counts_the_time_spent_before_a_resume(batches, tmp_path):
    """``learner.max_minutes``: the schedule follows the training time, across resumes. The
    totals were saved but never restored, so a resumed run's schedule started from zero."""
    timed = load_config(
        "smoke",
        [
            "learner.eval_every=0",
            "learner.checkpoint_every=4",
            "learner.max_steps=100",
            "learner.max_minutes=10",
            "learner.schedule=cosine",
        ],
    )
    first = Learner(timed, tmp_path)
    first.fit(batches[:4])
    spent = first.totals["wait"] + first.totals["step"]
    assert spent > 0 and first.totals["steps"] == 4
    resumed = Learner(timed, tmp_path)
    resumed.restore(CheckpointManager(tmp_path / "checkpoints").latest())
    assert resumed.totals == first.totals
    resumed.fit(batches[4:5])
    assert resumed.totals["steps"] == 5
    assert resumed.totals["step"] > first.totals["step"]
    # The schedule's progress after the resumed step counts the first run's time too.
    progress = float(resumed.train_step.schedule.progress.numpy())
    assert progress >= 0.999 * spent / (60 * timed.learner.max_minutes)  # float32


def test_a_batch_of_constant_features_stops_with_a_clear_error(cfg, batches):
    """Features equal everywhere (a band above the signal, silent audio) leave nothing to
    learn: the learner stops at once, naming the feature settings, instead of training on."""
    import dataclasses

    learner = Learner(cfg)
    flat = dataclasses.replace(batches[0], features=np.full_like(batches[0].features, -100.0))
    with pytest.raises(ConstantFeatures, match=r"features\.fmin .* features\.fmax"):
        learner.train_batch(flat)
    assert learner.step == 0
    learner.train_batch(batches[0])  # a real batch trains
    assert learner.step == 1


@pytest.mark.redis
def test_tensorboard_events_hold_the_steps_trained_and_the_evaluations(
    batches, tmp_path, redis_server
):
    """The learner's scalars reach TensorBoard event files through the same metrics writer
    as Redis; TensorBoard's own reader finds the steps the run trained."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cluster.metrics import MetricsWriter

    _, url = redis_server
    cfg = load_config(
        "smoke",
        ["learner.eval_every=0", "learner.checkpoint_every=0", "metrics.tensorboard_every=2"],
    )
    writer = MetricsWriter.from_config(cfg.metrics, "tb", "learner", url, tmp_path / "tb")
    assert writer.tensorboard is not None
    learner = Learner(cfg, metrics=writer)
    learner.fit(batches[:6])
    writer.eval(6, {"eer": 0.25, "eer_low": 0.2, "eer_high": 0.3, "min_dcf_01": 0.9})
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/gap", "train/wait_pct", "eval/eer_pct"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    losses = [r["loss"] for r in learner.recent]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses[1::2], rel=1e-6)
    assert [(e.step, e.value) for e in events.Scalars("eval/eer_pct")] == [(6, pytest.approx(25.0))]


def test_a_run_without_tensorboard_installed_still_trains(batches, tmp_path, monkeypatch, caplog):
    from cluster.tensorboard import TensorBoardSink

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    caplog.set_level("INFO")
    assert TensorBoardSink.open(tmp_path / "tb") is None
    assert "tensorboard is not installed" in caplog.text
    cfg = load_config("smoke", ["learner.eval_every=0", "learner.checkpoint_every=0"])
    learner = Learner(cfg)
    learner.fit(batches[:2])
    assert learner.step == 2


def test_tensorboard_after_a_resume_keeps_the_checkpoints_step_and_drops_what_came_after(
    tmp_path,
):
    """A killed run wrote steps 6-8 after its checkpoint at 5; the resumed run writes 6-7
    again. TensorBoard shows 1-7 once: the checkpoint's step kept, the orphans dropped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cluster.tensorboard import TensorBoardSink

    killed = TensorBoardSink(tmp_path, every=1)
    for step in range(1, 9):
        killed.scalars(step, {"train/loss": float(step)})
    killed.close()
    time.sleep(0.01)  # event files are read in name order: the resumed one comes second
    resumed = TensorBoardSink(tmp_path, every=1)
    resumed.resumed_at(5)
    for step in (6, 7):
        resumed.scalars(step, {"train/loss": 10.0 + step})
    resumed.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    got = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert got == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 16.0), (7, 17.0)]


@pytest.mark.redis
def test_an_evaluation_without_scalars_is_not_taken_for_a_resume(tmp_path, redis_server):
    """The writer's TensorBoard queue tells a resume from an evaluation that carries none
    of the scalars TensorBoard shows: an empty one was once written as a session start at
    step 3, and TensorBoard then dropped the steps 3-4 queued before it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cluster.metrics import MetricsWriter
    from cluster.tensorboard import TensorBoardSink

    _, url = redis_server
    writer = MetricsWriter(url, "tb-empty", tensorboard=TensorBoardSink(tmp_path, every=1))
    for step in range(1, 5):
        writer.train({"step": step, "loss": 0.1 * step})
    writer.eval(2, {"trials": 10})  # nothing TensorBoard draws
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
