"""Everything TensorFlow-specific: device choice, mixed precision and the compiled train step.

The step is a ``tf.function`` with a fixed input signature, traced once: every
batch of a run has the same shape ``[3B, T, n_mels]`` and dtype, so a second
trace would mean a bug (``tracing_count`` lets a test prove it).

    step = TrainStep(cfg, mixed=False, classes=data.classes())
    out = step(batch.features, batch.speakers)    # {"loss": ..., "cos_ap": ..., ...}
    emb = step.embed(features)                     # [N, D] unit vectors, inference mode
"""

from __future__ import annotations

import logging

from learner.backend import tensorflow_quietly  # noqa: E402

tensorflow_quietly()  # TF's C++ start-up chatter, kept for --verbose

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cluster.config import LearnerConfig, RunConfig  # noqa: E402
from learner.model import (  # noqa: E402
    WarmupDecay,
    batch_loss,
    build_head,
    build_model,
    classification_loss,
    cosine_logits,
    margin_at,
    triplet_loss,
)

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


def schedule(cfg: LearnerConfig) -> WarmupDecay:
    """The run's schedule; with ``max_minutes`` it also follows the share of time spent
    (``TrainStep.set_progress``)."""
    progress = tf.Variable(0.0, trainable=False, name="time_progress") if cfg.max_minutes else None
    return WarmupDecay(
        cfg.lr, cfg.max_steps, cfg.warmup_steps, cfg.schedule, cfg.lr_floor, progress
    )


class TrainStep:
    """Model, optimizer and the compiled step for one run configuration.

    ``classes`` maps a batch label (the speaker's index in the corpus, sorted by name: the
    same in every producer) to its class among the training speakers, -1 for none; it is
    needed by the losses with a classifier (``learner.loss`` other than ``triplet``).
    """

    def __init__(self, cfg: RunConfig, mixed: bool = False, classes=None) -> None:
        self.cfg = cfg
        self.mixed = mixed
        lc = cfg.learner
        keras.utils.set_random_seed(lc.seed)  # the same config builds the same model
        self.model = build_model(cfg.model, cfg.features.n_mels, cfg.sampler.frames)
        self.head = None
        if lc.loss != "triplet":
            if classes is None or int(max(classes, default=-1)) < 1:
                raise ValueError(f"learner.loss={lc.loss} needs at least 2 training speakers")
            self.head = build_head(int(max(classes)) + 1, cfg.model.embedding_dim)
        self.schedule = schedule(lc)
        if lc.weight_decay:
            optimizer = keras.optimizers.AdamW(self.schedule, weight_decay=lc.weight_decay)
        else:
            optimizer = keras.optimizers.Adam(learning_rate=self.schedule)
        if mixed:  # scale the loss so float16 gradients do not underflow
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        trainable = self.model.trainable_variables + (
            self.head.trainable_variables if self.head is not None else []
        )
        self.optimizer.build(trainable)
        b, t, m = 3 * cfg.sampler.triplets, cfg.sampler.frames, cfg.features.n_mels
        dtype = tf.float16 if cfg.features.dtype == "float16" else tf.float32
        margin, mining = lc.margin, lc.mining
        model, opt, head = self.model, self.optimizer, self.head
        table = tf.constant(classes if classes is not None else [-1], tf.int32)
        aam = lc.aam_margin if lc.loss == "aam+triplet" else 0.0
        scale, weight, pretrain = lc.aam_scale, lc.cls_weight, lc.pretrain_steps
        batch_weight, batch_scale = lc.batch_weight, lc.batch_scale

        @tf.function(
            input_signature=[tf.TensorSpec([b, t, m], dtype), tf.TensorSpec([b], tf.int32)],
            reduce_retracing=False,
        )
        def step(features, labels):
            with tf.GradientTape() as tape:
                emb = model(features, training=True)
                loss, stats = triplet_loss(emb, labels, margin, mining)
                stats["triplet_loss"] = loss
                if batch_weight:  # every other speaker of the batch as a negative too
                    b_loss, b_accuracy = batch_loss(emb, labels, batch_scale)
                    loss = loss + batch_weight * b_loss
                    stats.update(batch_loss=b_loss, batch_accuracy=b_accuracy)
                if head is not None:
                    cos = cosine_logits(emb, head.get_layer("speaker_weights").kernel)
                    classes = tf.gather(table, labels)
                    m = margin_at(opt.iterations, aam, lc.aam_margin_start, lc.aam_margin_steps)
                    cls_loss, accuracy = classification_loss(cos, classes, m if aam else 0.0, scale)
                    # Pre-training: the classifier alone, then both.
                    joint = tf.cast(opt.iterations >= pretrain, tf.float32)
                    loss = joint * loss + weight * cls_loss
                    stats.update(cls_loss=cls_loss, cls_accuracy=accuracy)
                scaled = opt.scale_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, trainable)
            opt.apply(grads, trainable)
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

    def set_progress(self, share: float) -> None:
        """Share of ``learner.max_minutes`` spent training (the schedule decays with it)."""
        if self.schedule.progress is not None:
            self.schedule.progress.assign(min(max(share, 0.0), 1.0))

    def lr(self, step: int | None = None) -> float:
        """The learning rate the schedule gives ``step`` (default: the next step)."""
        return float(self.schedule(self.step if step is None else step))

    @property
    def tracing_count(self) -> int:
        return self._step.experimental_get_tracing_count()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())
