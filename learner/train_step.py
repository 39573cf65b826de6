"""Everything TensorFlow-specific: device choice, mixed precision and the compiled train step.

The step is a ``tf.function`` with a fixed input signature, traced once: every
batch of a run has the same shape ``[3B, T, n_mels]`` and dtype, so a second
trace would mean a bug (``tracing_count`` lets a test prove it).
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cluster.config import LearnerConfig, RunConfig  # noqa: E402
from learner.model import build_model, triplet_loss  # noqa: E402

log = logging.getLogger(__name__)


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def resolve_device(requested: str) -> str:
    """``auto`` -> ``gpu`` when TensorFlow sees one, else ``cpu``; ``gpu`` without one is an error."""
    found = gpus()
    if requested == "gpu" and not found:
        raise RuntimeError(
            "--device gpu, but TensorFlow sees no GPU in this process "
            "(install the [gpu] extra and check nvidia-smi)"
        )
    if requested == "auto":
        return "gpu" if found else "cpu"
    return requested


def use_mixed_precision(cfg: LearnerConfig, device: str) -> bool:
    return cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and device == "gpu")


def configure(device: str, mixed: bool) -> None:
    """Process-wide settings; call before building the model."""
    if device == "gpu":
        for gpu in gpus():  # take memory as needed, leave room for other processes
            tf.config.experimental.set_memory_growth(gpu, True)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


class TrainStep:
    """Model, optimizer and the compiled step for one run configuration."""

    def __init__(self, cfg: RunConfig, mixed: bool = False) -> None:
        self.cfg = cfg
        self.mixed = mixed
        keras.utils.set_random_seed(cfg.learner.seed)  # the same config builds the same model
        self.model = build_model(cfg.model, cfg.features.n_mels, cfg.sampler.frames)
        optimizer = keras.optimizers.Adam(learning_rate=cfg.learner.lr)
        if mixed:  # scale the loss so float16 gradients do not underflow
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        self.optimizer.build(self.model.trainable_variables)
        b, t, m = 3 * cfg.sampler.triplets, cfg.sampler.frames, cfg.features.n_mels
        dtype = tf.float16 if cfg.features.dtype == "float16" else tf.float32
        margin, mining = cfg.learner.margin, cfg.learner.mining
        model, opt = self.model, self.optimizer

        @tf.function(
            input_signature=[tf.TensorSpec([b, t, m], dtype), tf.TensorSpec([b], tf.int32)],
            reduce_retracing=False,
        )
        def step(features, labels):
            with tf.GradientTape() as tape:
                emb = model(features, training=True)
                loss, stats = triplet_loss(emb, labels, margin, mining)
                scaled = opt.scale_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            return {"loss": loss, **stats}

        self._step = step

        @tf.function(input_signature=[tf.TensorSpec([None, t, m], tf.float32)])
        def embed(features):
            return model(features, training=False)

        self._embed = embed

    def __call__(self, features, labels) -> dict[str, float]:
        out = self._step(features, labels)
        # .numpy() waits for the device: the step's time is measured up to here.
        return {k: float(v.numpy()) for k, v in out.items()}

    def embed(self, features) -> tf.Tensor:
        return self._embed(tf.convert_to_tensor(features, tf.float32)).numpy()

    @property
    def tracing_count(self) -> int:
        return self._step.experimental_get_tracing_count()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())
