"""Model, loss and negative mining (real Keras on the TensorFlow backend)."""

import keras
import numpy as np
import pytest

from cluster.config import ModelConfig, load_config
from learner.model import batch_loss, build_model, select_negatives, triplet_loss


def test_base_preset_has_deep_speaker_size():
    cfg = load_config("base")
    model = build_model(cfg.model, cfg.features.n_mels)
    assert model.count_params() == pytest.approx(24.2e6, rel=0.01)
    assert model.output_shape == (None, 512)


def test_width_multiplier_shrinks_and_output_is_unit_norm():
    small = build_model(ModelConfig(width=0.0625, blocks=1, embedding_dim=16), 64)
    assert small.count_params() < 100_000
    x = np.random.default_rng(0).normal(-40, 10, size=(6, 50, 64)).astype("float32")
    emb = np.asarray(small(x))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Segment normalisation makes the model blind to a constant dB offset (gain).
    np.testing.assert_allclose(np.asarray(small(x + 12.0)), emb, atol=1e-4)


def test_cmn_removes_each_bins_mean_and_keeps_its_variation():
    cfg = ModelConfig(width=0.0625, blocks=1, embedding_dim=16, input_norm="cmn")
    model = build_model(cfg, 64)
    rng = np.random.default_rng(1)
    x = rng.normal(-40, 10, size=(4, 50, 64)).astype("float32")
    norm = keras.Model(model.input, model.get_layer("segment_norm").output)
    np.testing.assert_allclose(np.asarray(norm(x)), x - x.mean(axis=1, keepdims=True), atol=1e-4)
    emb = np.asarray(model(x))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Blind to a constant offset per bin (a gain, a fixed channel), unlike cmvn not to how
    # far each bin moves over time.
    tilt = np.linspace(-6, 6, 64, dtype="float32")
    np.testing.assert_allclose(np.asarray(model(x + tilt)), emb, atol=1e-4)
    mean = x.mean(axis=1, keepdims=True)
    wider = mean + 3.0 * (x - mean)
    assert np.abs(np.asarray(model(wider)) - emb).max() > 1e-2
    cmvn = build_model(ModelConfig(width=0.0625, blocks=1, embedding_dim=16), 64)
    np.testing.assert_allclose(np.asarray(cmvn(wider)), np.asarray(cmvn(x)), atol=1e-4)


def test_gain_removes_the_level_and_keeps_the_spectrum_shape():
    cfg = ModelConfig(width=0.0625, blocks=1, embedding_dim=16, input_norm="gain")
    model = build_model(cfg, 64)
    x = np.random.default_rng(2).normal(-40, 10, size=(4, 50, 64)).astype("float32")
    norm = keras.Model(model.input, model.get_layer("segment_norm").output)
    want = x - x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(np.asarray(norm(x)), want, atol=1e-4)
    emb = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(model(x - 9.0)), emb, atol=1e-4)  # a gain
    # A tilt of the spectrum (what cmn removes) reaches the model.
    tilt = np.linspace(-6, 6, 64, dtype="float32")
    assert np.abs(np.asarray(norm(x + tilt)) - want).max() > 5.0
    assert np.abs(np.asarray(model(x + tilt)) - emb).max() > 1e-2


def unit(v):
    v = np.asarray(v, dtype="float32")
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_triplet_loss_value_and_stats():
    a = unit([[1, 0], [0, 1]])
    p = unit([[1, 0.1], [0.5, 1]])
    n = unit([[1, 0.05], [-1, 0]])
    emb = np.concatenate([a, p, n])
    labels = np.array([0, 1, 0, 1, 2, 3], "int32")
    loss, stats = triplet_loss(emb, labels, margin=0.1)
    cos_ap = np.sum(a * p, 1)
    cos_an = np.sum(a * n, 1)
    want = np.mean(np.maximum(0, cos_an - cos_ap + 0.1))
    assert float(loss) == pytest.approx(want, abs=1e-6)
    assert float(stats["active"]) == 0.5  # first triplet inside the margin, second not
    assert float(stats["cos_ap"]) == pytest.approx(cos_ap.mean(), abs=1e-6)


def test_mining_picks_the_known_negatives():
    # Two anchors; the batch offers negatives at known similarities to anchor 0.
    a = unit([[1, 0, 0], [0, 1, 0]])
    p = unit([[0.8, 0.6, 0], [0, 1, 0.2]])  # cos(a0,p0) = 0.8
    n = unit([[0.6, 0.8, 0], [0.95, 0.31, 0]])  # cos(a0,n0)=0.6, cos(a0,n1)=0.95
    emb = np.concatenate([a, p, n])
    labels = np.array([0, 1, 0, 1, 2, 3], "int32")
    hard = np.asarray(select_negatives(emb, labels, "hard"))
    semi = np.asarray(select_negatives(emb, labels, "semihard"))
    none = np.asarray(select_negatives(emb, labels, "none"))
    np.testing.assert_allclose(none, n)
    # Hardest for anchor 0 among other speakers (labels 1, 2, 3): n1 (0.95).
    np.testing.assert_allclose(hard[0], n[1], atol=1e-6)
    # Semi-hard: most similar that is still below cos(a,p)=0.8 -> n0 (0.6).
    np.testing.assert_allclose(semi[0], n[0], atol=1e-6)
    # Anchor 1 (label 1): a0 (label 0) has cos 0, p0 has 0.6, n0 0.8, n1 0.31.
    np.testing.assert_allclose(hard[1], n[0], atol=1e-6)


def test_semihard_falls_back_to_sampled_negative():
    a = unit([[1, 0], [0, 1]])
    p = unit([[0, 1], [1, 0]])  # cos(a,p) = 0: nothing is less similar than ... except negatives
    n = unit([[-1, 0], [0, -1]])
    emb = np.concatenate([a, p, n])
    labels = np.array([0, 0, 0, 0, 1, 1], "int32")  # both anchors one speaker
    semi = np.asarray(select_negatives(emb, labels, "semihard"))
    np.testing.assert_allclose(semi, n, atol=1e-6)


def test_stats_pooling_adds_the_spread_over_time():
    cfg = ModelConfig(width=0.0625, blocks=1, embedding_dim=16, input_norm="cmn", pooling="stats")
    model = build_model(cfg, 64)
    x = np.random.default_rng(2).normal(-40, 10, size=(3, 40, 64)).astype("float32")
    before = keras.Model(model.input, model.get_layer("flatten_freq").output)
    pooled = keras.Model(model.input, model.get_layer("temporal_stats").output)
    h = np.asarray(before(x))  # [N, T', D]
    spread = np.abs(h - h.mean(axis=1, keepdims=True)).mean(axis=1)
    np.testing.assert_allclose(np.asarray(pooled(x)), np.concatenate([h.mean(1), spread], 1),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    assert spread.max() > 0  # not a constant: the spread carries information
    emb = np.asarray(model(x))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # The mean-pooled model has no spread and fewer inputs to its dense layer.
    mean = build_model(ModelConfig(width=0.0625, blocks=1, embedding_dim=16, input_norm="cmn"), 64)
    assert "temporal_stats" not in [layer.name for layer in mean.layers]
    assert mean.count_params() < model.count_params()


def _batch_loss_reference(emb, labels, scale):
    b = len(emb) // 3
    a, cands = emb[:b], emb[b:]
    loss, hits = [], 0
    for i in range(b):
        keep = [j for j in range(2 * b) if j == i or labels[b + j] != labels[i]]
        z = scale * cands[keep] @ a[i]
        t = keep.index(i)
        loss.append(np.log(np.exp(z).sum()) - z[t])
        hits += int(np.argmax(z) == t)
    return np.mean(loss), hits / b


def test_batch_loss_is_a_softmax_over_the_other_speakers_of_the_batch():
    rng = np.random.default_rng(3)
    emb = unit(rng.normal(size=(12, 8)))
    # Anchors of speakers 0-3; negative 9 is speaker 0 again (left out for anchor 0), and the
    # negatives 10 and 11 share speaker 3 with anchor 3.
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1, 0, 3, 3], "int32")
    loss, accuracy = batch_loss(emb, labels, scale=10.0)
    want, hits = _batch_loss_reference(emb, labels, 10.0)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(accuracy) == pytest.approx(hits)
    # Positives equal to their anchors and far from the rest: near zero loss, all found.
    close = emb.copy()
    close[4:8] = close[:4]
    loss, accuracy = batch_loss(close, labels, scale=30.0)
    assert float(loss) < 0.05 and float(accuracy) == 1.0


def test_a_train_step_with_stats_pooling_and_the_batch_loss_learns_a_batch():
    from learner.train_step import TrainStep

    cfg = load_config(
        "smoke",
        ["model.pooling=stats", "learner.batch_weight=1", "sampler.triplets=4",
         "sampler.frames=40", "features.dtype=float32", "learner.lr=0.003"],
    )  # fmt: skip
    step = TrainStep(cfg)
    rng = np.random.default_rng(4)
    # One fixed batch of four speakers: the compiled step must fit it.
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1, 2, 3, 0], "int32")
    feats = rng.normal(-40, 6, size=(12, 40, 64)).astype("float32")
    first = step(feats, labels)
    for _ in range(30):
        last = step(feats, labels)
    assert {"batch_loss", "batch_accuracy", "triplet_loss"} <= set(first)
    assert first["loss"] == pytest.approx(first["triplet_loss"] + first["batch_loss"], rel=1e-4)
    assert last["batch_loss"] < first["batch_loss"] and last["batch_accuracy"] == 1.0
