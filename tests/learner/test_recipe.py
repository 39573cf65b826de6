"""The training recipe: AAM/softmax heads with triplet loss, the learning-rate schedule,
model averaging, and the EER's bootstrap interval."""

from __future__ import annotations

import math
import queue

import numpy as np
import pytest

from cluster.config import load_config, replace
from learner.averaging import average_weights
from learner.checkpoint import CheckpointManager
from learner.learner import Learner
from learner.model import WarmupDecay, classification_loss, margin_at
from learner.scoring.scores import bootstrap_eer, eer
from workers.producer import BatchProducer
from workers.rundata import RunData


def test_aam_loss_on_a_constructed_batch():
    # Three rows, three classes; cosines chosen by hand, the third row's speaker unknown (-1).
    cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.5, 0.4], [0.2, 0.2, 0.2]], "float32")
    classes = np.array([0, 2, -1], "int32")
    scale, margin = 10.0, 0.3

    def expected(m: float) -> float:
        total = 0.0
        for row, c in enumerate(classes[:2]):
            z = cos[row].astype(np.float64).copy()
            theta = math.acos(z[c])
            z[c] = math.cos(theta + m)
            logits = scale * z
            total += -(logits[c] - np.log(np.exp(logits).sum()))
        return total / 2

    loss, acc = classification_loss(cos, classes, margin, scale)
    assert float(loss) == pytest.approx(expected(margin), rel=1e-4)
    plain, plain_acc = classification_loss(cos, classes, 0.0, scale)
    assert float(plain) == pytest.approx(expected(0.0), rel=1e-4)
    assert float(loss) > float(plain)  # the margin makes the target harder
    assert float(acc) == float(plain_acc) == pytest.approx(0.5)  # row 0 right, row 1 wrong
    # A margin given as a tensor (warming up) gives the same loss as the number.
    as_tensor, _ = classification_loss(cos, classes, margin_at(10, margin), scale)
    assert float(as_tensor) == pytest.approx(expected(margin), rel=1e-4)
    half, _ = classification_loss(cos, classes, margin_at(150, margin, 100, 100), scale)
    assert float(half) == pytest.approx(expected(margin / 2), rel=1e-4)


def test_the_aam_margin_warms_up_linearly_between_its_steps():
    at = [float(margin_at(s, 0.2, start=100, steps=200)) for s in (0, 100, 150, 200, 300, 900)]
    assert at == pytest.approx([0.0, 0.0, 0.05, 0.1, 0.2, 0.2])
    assert float(margin_at(0, 0.2)) == pytest.approx(0.2)  # no warm-up: the margin at once


def test_schedule_values_at_chosen_steps():
    cos = WarmupDecay(1e-3, 1000, warmup=100, kind="cosine", floor=0.01)
    assert float(cos(0)) == pytest.approx(1e-5)
    assert float(cos(49)) == pytest.approx(5e-4)
    assert float(cos(100)) == pytest.approx(1e-3)
    assert float(cos(550)) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-5)
    assert float(cos(1000)) == pytest.approx(1e-5, rel=1e-4)
    exp = WarmupDecay(1e-3, 1000, warmup=0, kind="exponential", floor=0.01)
    assert float(exp(500)) == pytest.approx(1e-4, rel=1e-4)
    assert float(WarmupDecay(1e-3, 1000, kind="constant")(777)) == pytest.approx(1e-3)


def test_bootstrap_interval_holds_the_eer_and_narrows_with_more_speakers():
    rng = np.random.default_rng(0)

    def trials(speakers: int):
        groups = np.repeat(np.arange(speakers), 40)
        labels = np.tile(np.r_[np.ones(20), np.zeros(20)], speakers)
        scores = rng.normal(labels * 1.5, 1.0)
        return scores, labels, groups

    few = trials(5)
    many = trials(80)
    lo_f, hi_f = bootstrap_eer(*few, n=200)
    lo_m, hi_m = bootstrap_eer(*many, n=200)
    assert lo_f <= eer(few[0], few[1])[0] <= hi_f
    assert lo_m <= eer(many[0], many[1])[0] <= hi_m
    assert hi_m - lo_m < hi_f - lo_f


@pytest.fixture(scope="module")
def setup(synthetic_root):
    cfg = load_config(
        "smoke",
        [
            "learner.eval_every=3",
            "learner.checkpoint_every=2",
            "learner.max_steps=6",
            "learner.loss=aam+triplet",
            "learner.pretrain_steps=3",
            "learner.average_last=2",
            "learner.keep_checkpoints=3",
            "learner.schedule=cosine",
            "learner.warmup_steps=2",
            "learner.weight_decay=1e-4",
        ],
    )
    q = queue.Queue()
    BatchProducer.from_config(cfg, 0, q).run(max_batches=6)
    return cfg, [q.get() for _ in range(6)]


def test_aam_triplet_pretrains_then_joins_saves_its_head_apart_and_averages(setup, tmp_path):
    from learner.actor import build_learner
    from learner.inference.speaker_model import SpeakerModel

    cfg, batches = setup
    learner = build_learner(cfg, tmp_path, device="cpu")
    data = RunData.open(cfg.data, cfg.synthetic)
    classes = data.classes()
    assert sorted(classes[classes >= 0]) == list(range(len(data.train)))
    assert learner.train_step.head.output_shape == (None, len(data.train))
    learner.fit(batches)
    rec = list(learner.recent)
    for r in rec[:3]:  # pre-training: the classifier alone
        assert r["loss"] == pytest.approx(r["cls_loss"], rel=1e-5)
    for r in rec[3:]:
        assert r["loss"] == pytest.approx(r["cls_loss"] + r["triplet_loss"], rel=1e-5)
    assert rec[0]["lr"] < rec[1]["lr"] and rec[-1]["lr"] < rec[2]["lr"]  # warm-up, then decay
    assert "eer_low" in learner.last_eval and "eer_smoothed" in learner.last_eval

    ckpts = CheckpointManager(tmp_path / "checkpoints").all()
    last = ckpts[-1]
    assert last.step == 6 and (last.path / "head.npz").exists()
    head = last.arrays("head")
    assert len(head) == 1 and next(iter(head.values())).shape[1] == len(data.train)
    # The inference model has no head and loads from the averaged checkpoint.
    averaged = tmp_path / "averaged"
    model = SpeakerModel.load(averaged)
    assert all("speaker_weights" not in v.path for v in model.model.variables)
    expect = average_weights(ckpts[-2:])
    got = model.checkpoint.arrays("weights")
    for k, v in expect.items():
        mean = (ckpts[-2].arrays("weights")[k] + ckpts[-1].arrays("weights")[k]) / 2
        np.testing.assert_allclose(got[k], mean.astype(v.dtype), rtol=1e-6, atol=1e-7)
    assert learner.averaged["from"] == [4, 6] and "eer" in learner.averaged
    assert model.threshold == pytest.approx(learner.averaged["threshold"])

    # Resume: the head comes back with the model and the optimizer.
    again = build_learner(cfg, tmp_path / "again", device="cpu")
    again.restore(last)
    np.testing.assert_array_equal(
        again.train_step.head.get_layer("speaker_weights").kernel.numpy(),
        learner.train_step.head.get_layer("speaker_weights").kernel.numpy(),
    )

    # The recipe bench scores the averaged model as trained and, with the cohort that the end
    # of the run stored beside it, after AS-norm: the same trials, other scores.
    from bench.recipe import score

    learner.finish()
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    got = score(tmp_path, averaged, 400)
    assert "asnorm" in got and got["asnorm"]["trials"] == got["trials"]
    assert got["asnorm"]["eer_low"] <= got["asnorm"]["eer"] <= got["asnorm"]["eer_high"]
    assert got["asnorm"]["threshold"] != got["threshold"]  # normalised scores, not cosines


def test_average_command_and_refusals(setup, tmp_path, capsys):
    from learner.commands.average import main

    cfg, batches = setup
    plain = replace(cfg, learner={"loss": "triplet", "average_last": 0, "eval_every": 0})
    Learner(plain, tmp_path).fit(batches[:4])
    assert main([str(tmp_path), "--last", "2"]) == 0
    assert "averaged ckpt-00000002, ckpt-00000004" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 2
    assert "averaging needs 2 or more" in capsys.readouterr().err


def test_a_time_limited_schedule_decays_with_the_time_spent():
    import keras

    spent = keras.Variable(0.0, trainable=False)
    sched = WarmupDecay(1e-3, 100_000, warmup=0, kind="cosine", floor=0.01, progress=spent)
    assert float(sched(10)) == pytest.approx(1e-3, rel=1e-3)  # few steps, little time
    spent.assign(0.5)  # half the time budget gone: half way down, whatever the step
    assert float(sched(10)) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-4)
    spent.assign(1.0)
    assert float(sched(10)) == pytest.approx(1e-5, rel=1e-3)
