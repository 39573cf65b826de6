"""ResCNN speaker-embedding model and triplet loss (Deep Speaker, Li et al. 2017).

Built-in Keras layers and ``keras.ops`` only, no ``tf.*`` and no custom layer
classes: the model and loss run unchanged on Keras's TensorFlow, JAX and PyTorch
backends, and an exported ``.keras`` file loads with plain Keras. The compiled train step and
everything TensorFlow-specific live in ``learner/train_step.py``.

    model = build_model(ModelConfig(width=0.125), n_mels=64)
    emb = model(features)                       # [N, T, 64] log-mel dB -> [N, D], unit norm
    loss, stats = triplet_loss(emb, labels, margin=0.1, mining="semihard")
"""

from __future__ import annotations

import math

from learner.backend import tensorflow_quietly

tensorflow_quietly()  # before Keras imports it: no CUDA chatter on a CPU machine

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from cluster.config import ModelConfig  # noqa: E402

STAGE_FILTERS = (64, 128, 256, 512)
RELU_CLIP = 20.0


def segment_norm(inputs, kind: str = "cmvn"):
    """Per-segment normalisation over time of each mel bin: ``cmvn`` zero mean and unit
    variance (Deep Speaker), ``cmn`` zero mean only (the cepstral mean normalisation of
    WeSpeaker and SpeechBrain recipes: the level of each bin's variation over time is kept),
    ``gain`` the segment's level only (one mean over time and bins: the long-term spectrum's
    shape, which cmn removes with the channel, is kept; per-view channel augmentation is
    what teaches the model to tell the two apart).

    The model's first layers, so producers ship raw log-mel crops (cheap float16 copies)
    and training and inference normalise identically. Built-in layers only (for ``cmvn``,
    LayerNormalization over axis 1 with no learned scale is exactly the job), so an
    exported ``.keras`` file loads without this code. The mean is taken in float32 even under
    mixed precision (LayerNormalization does that itself).
    """
    if kind == "cmvn":
        return layers.LayerNormalization(
            axis=1, center=False, scale=False, epsilon=1e-5, name="segment_norm"
        )(inputs)
    mean = layers.GlobalAveragePooling1D(keepdims=True, dtype="float32", name="segment_mean")(
        inputs
    )
    if kind == "gain":  # one number per segment: the mean over the bins' means too
        mean = layers.GlobalAveragePooling1D(
            data_format="channels_first", keepdims=True, dtype="float32", name="segment_level"
        )(mean)
    return layers.Subtract(dtype="float32", name="segment_norm")([inputs, mean])


def clipped_relu(name: str) -> layers.Layer:
    return layers.ReLU(max_value=RELU_CLIP, name=name)


def _res_block(x, filters: int, name: str):
    shortcut = x
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = clipped_relu(f"{name}_relu1")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return clipped_relu(f"{name}_relu2")(x)


def temporal_pooling(x, kind: str = "mean"):
    """``[N, T', D]`` -> ``[N, D]`` (``mean``: Deep Speaker's temporal average) or
    ``[N, 2D]`` (``stats``: the average and the spread over time, as x-vector and WeSpeaker's
    statistics pooling do). The spread is the mean absolute deviation, built from built-in
    layers (no square root layer exists): since the deviations average to zero, it is twice
    the mean of their positive part."""
    mean = layers.GlobalAveragePooling1D(name="temporal_average")(x)
    if kind == "mean":
        return mean
    centred = layers.Subtract(name="temporal_centre")(
        [x, layers.Reshape((1, -1), name="temporal_average_kept")(mean)]
    )
    spread = layers.GlobalAveragePooling1D(name="temporal_spread")(
        layers.ReLU(name="temporal_positive")(centred)
    )
    spread = layers.Rescaling(2.0, name="temporal_deviation")(spread)
    return layers.Concatenate(name="temporal_stats")([mean, spread])


def build_model(cfg: ModelConfig, n_mels: int = 64, frames: int | None = None) -> keras.Model:
    """ResCNN: per-segment normalisation (``cfg.input_norm``), four stages of (5x5
    stride-2 conv, ``cfg.blocks`` residual blocks), temporal pooling (``cfg.pooling``), dense
    ``embedding_dim``, L2 normalisation."""
    inputs = keras.Input(shape=(frames, n_mels), name="logmel")
    x = segment_norm(inputs, cfg.input_norm)
    x = layers.Reshape((-1, n_mels, 1), name="add_channel")(x)
    for i, base in enumerate(STAGE_FILTERS, start=1):
        filters = max(4, round(base * cfg.width))
        x = layers.Conv2D(
            filters, 5, strides=2, padding="same", use_bias=False, name=f"stage{i}_conv"
        )(x)
        x = layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = clipped_relu(f"stage{i}_relu")(x)
        for b in range(cfg.blocks):
            x = _res_block(x, filters, name=f"stage{i}_res{b + 1}")
    # Average over time, keeping frequency x channels: [N, T', F', C] -> [N, F' * C].
    x = layers.Reshape((-1, x.shape[2] * x.shape[3]), name="flatten_freq")(x)
    x = temporal_pooling(x, cfg.pooling)
    x = layers.Dense(cfg.embedding_dim, name="embedding")(x)
    # Unit vectors, in float32 even under mixed precision: the layer's own dtype, since a layer
    # under the global mixed policy casts its input back to float16.
    outputs = layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(x)
    return keras.Model(inputs, outputs, name="rescnn")


def _split(emb, b: int):
    return emb[:b], emb[b : 2 * b], emb[2 * b :]


def select_negatives(emb, labels, mining: str = "none"):
    """For each anchor, the negative embedding to use.

    ``none``: the sampled negative. ``hard``: the most similar embedding of any
    other speaker in the batch. ``semihard`` (FaceNet): the most similar one that
    is still less similar than the positive; the sampled negative when there is none.
    """
    b = ops.shape(emb)[0] // 3
    anchors, positives, negatives = _split(emb, b)
    if mining == "none":
        return negatives
    sim = ops.matmul(anchors, ops.transpose(emb))  # [B, 3B]
    other = ops.not_equal(ops.expand_dims(labels[:b], 1), ops.expand_dims(labels, 0))
    very_low = ops.full_like(sim, -1e4)
    if mining == "semihard":
        cos_ap = ops.sum(anchors * positives, axis=-1, keepdims=True)
        eligible = ops.logical_and(other, ops.less(sim, cos_ap))
    elif mining == "hard":
        eligible = other
    else:
        raise ValueError(f"unknown mining {mining!r}")
    masked = ops.where(eligible, sim, very_low)
    best = ops.argmax(masked, axis=1)
    chosen = ops.take(emb, best, axis=0)
    found = ops.expand_dims(ops.any(eligible, axis=1), 1)
    return ops.where(found, chosen, negatives)


def triplet_loss(emb, labels, margin: float = 0.1, mining: str = "none"):
    """``mean(max(0, cos(a, n) - cos(a, p) + margin))`` and the stats that show learning.

    Returns ``(loss, stats)`` with mean cos(a,p), mean cos(a,n) and the fraction
    of triplets still inside the margin (``active``).
    """
    emb = ops.cast(emb, "float32")
    b = ops.shape(emb)[0] // 3
    anchors, positives, _ = _split(emb, b)
    negatives = select_negatives(emb, labels, mining)
    cos_ap = ops.sum(anchors * positives, axis=-1)
    cos_an = ops.sum(anchors * negatives, axis=-1)
    hinge = ops.relu(cos_an - cos_ap + margin)
    loss = ops.mean(hinge)
    stats = {
        "cos_ap": ops.mean(cos_ap),
        "cos_an": ops.mean(cos_an),
        "active": ops.mean(ops.cast(ops.greater(hinge, 0.0), "float32")),
        # Mean pairwise cosine of the anchors: near 1 means every embedding is the same.
        "spread": 1.0 - ops.mean(ops.matmul(anchors, ops.transpose(anchors))),
    }
    return loss, stats


def batch_loss(emb, labels, scale: float = 10.0):
    """Every other speaker in the batch as a negative: for each anchor, a softmax over its
    cosines (times ``scale``) to the batch's positives and negatives, whose target is its own
    positive (the angular prototypical loss of Chung et al. 2020 with one utterance per
    prototype; InfoNCE with labels). Candidates of the anchor's own speaker other than its
    positive are left out. Where the triplet loss sees one negative per anchor, this sees
    2B - 1, so an easy random negative no longer ends an anchor's learning.

    Returns ``(loss, accuracy)``: accuracy is the share of anchors whose positive is the
    most similar candidate.
    """
    emb = ops.cast(emb, "float32")
    b = ops.shape(emb)[0] // 3
    anchors, candidates = emb[:b], emb[b:]  # candidates: positives, then negatives
    logits = scale * ops.matmul(anchors, ops.transpose(candidates))  # [B, 2B]
    own = ops.one_hot(ops.arange(b), 2 * b, dtype="bool")
    same = ops.equal(ops.expand_dims(labels[:b], 1), ops.expand_dims(labels[b:], 0))
    masked = ops.where(ops.logical_and(same, ops.logical_not(own)), -1e4, logits)
    target = ops.sum(ops.where(own, logits, 0.0), axis=1)
    loss = ops.mean(ops.logsumexp(masked, axis=1) - target)
    accuracy = ops.mean(ops.cast(ops.equal(ops.argmax(masked, axis=1), ops.arange(b)), "float32"))
    return loss, accuracy


# -- the classification head (softmax / AAM over the training speakers) --------------------
def build_head(n_classes: int, embedding_dim: int) -> keras.Model:
    """Class weights for a cosine classifier: one ``embedding_dim`` vector per training
    speaker. A separate model, never part of the exported or inference model."""
    emb = keras.Input(shape=(embedding_dim,), name="embedding")
    logits = layers.Dense(n_classes, use_bias=False, name="speaker_weights")(emb)
    return keras.Model(emb, logits, name="speaker_head")


def cosine_logits(emb, kernel):
    """``[N, C]`` cosines between unit embeddings and the L2-normalised class vectors."""
    return ops.matmul(ops.cast(emb, "float32"), ops.normalize(kernel, axis=0))


def margin_at(step, margin: float, start: int = 0, steps: int = 0):
    """The AAM margin at ``step``: 0 until ``start``, then rising linearly to ``margin`` over
    ``steps`` steps (WeSpeaker's margin scheduler; ``steps=0``: ``margin`` throughout)."""
    if not steps:
        return ops.convert_to_tensor(margin, "float32")
    share = (ops.cast(step, "float32") - float(start)) / float(steps)
    return margin * ops.clip(share, 0.0, 1.0)


def classification_loss(cos, classes, margin=0.0, scale: float = 30.0):
    """Cross-entropy of ``scale * cos`` with an additive angular margin on the target class
    (ArcFace / AAM-softmax; ``margin=0`` is the normalised softmax). ``margin`` may be a
    tensor (a margin that warms up during training). Rows whose class is -1 (a speaker
    the classifier does not know) are ignored. Returns ``(loss, accuracy)``.
    """
    n_classes = ops.shape(cos)[1]
    known = ops.cast(ops.greater_equal(classes, 0), "float32")
    onehot = ops.one_hot(ops.maximum(classes, 0), n_classes) * ops.expand_dims(known, 1)
    cos = ops.clip(cos, -1.0 + 1e-7, 1.0 - 1e-7)
    if not isinstance(margin, int | float) or margin:
        m = ops.cast(margin, "float32")
        sin = ops.sqrt(1.0 - cos * cos)
        cos_m = cos * ops.cos(m) - sin * ops.sin(m)  # cos(theta + m)
        # Past theta = pi - m, cos(theta + m) would rise again: keep it decreasing (ArcFace;
        # cos(pi - m) = -cos(m), sin(pi - m) = sin(m)).
        cos_m = ops.where(ops.greater(cos, -ops.cos(m)), cos_m, cos - ops.sin(m) * m)
        cos = onehot * cos_m + (1.0 - onehot) * cos
    logits = scale * cos
    logp = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    per_row = -ops.sum(onehot * logp, axis=1)
    count = ops.maximum(ops.sum(known), 1.0)
    loss = ops.sum(per_row) / count
    right = ops.cast(ops.equal(ops.argmax(logits, axis=1), ops.maximum(classes, 0)), "float32")
    accuracy = ops.sum(right * known) / count
    return loss, accuracy


# -- the learning-rate schedule -----------------------------------------------------------
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then ``constant``, or
    ``cosine`` / ``exponential`` decay to ``peak * floor`` at ``total`` steps.

    ``progress`` (a variable in [0, 1], for a run limited by wall time) moves the decay
    along at least as fast as the share of the time budget spent, so the schedule ends
    with the run whichever limit comes first."""

    def __init__(
        self,
        peak: float,
        total: int,
        warmup: int = 0,
        kind: str = "constant",
        floor: float = 0.01,
        progress=None,
    ) -> None:
        self.peak, self.total, self.warmup, self.kind, self.floor = peak, total, warmup, kind, floor
        self.progress = progress

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * ops.minimum(1.0, (step + 1.0) / max(self.warmup, 1))
        span = max(self.total - self.warmup, 1)
        t = ops.clip((step - self.warmup) / span, 0.0, 1.0)
        if self.progress is not None:
            t = ops.maximum(t, ops.cast(self.progress, "float32"))
        if self.kind == "cosine":
            decayed = self.peak * (self.floor + (1 - self.floor) * 0.5 * (1 + ops.cos(math.pi * t)))
        elif self.kind == "exponential":
            decayed = self.peak * ops.power(self.floor, t)
        else:
            decayed = ops.convert_to_tensor(self.peak, "float32")
        return ops.where(step < self.warmup, warm, decayed)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total": self.total,
            "warmup": self.warmup,
            "kind": self.kind,
            "floor": self.floor,
        }
