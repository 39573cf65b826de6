"""Every metric, declared once: its name, its unit, the stream it is written to and whether
TensorBoard draws it. The Redis fields (``cluster.metrics``), the TensorBoard scalars
(``cluster.tensorboard``) and the dashboard's series names all derive from this table, so a
new metric is one line here.

    fields("eval")        # the eval stream's Redis fields, in order
    scalars("train")      # what TensorBoard draws of a train step (without "step")
    unit("eer")           # "share"
    shown("eer")          # Shown(label="EER", unit="%", scale=100.0): how charts draw it
"""

from __future__ import annotations

from dataclasses import dataclass

STREAMS = ("train", "eval", "producers")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # share (0-1), s, bits, count, cosine, rate, or "" (a plain number)
    stream: str  # one of STREAMS
    tensorboard: bool = True  # drawn as a scalar (numbers only; "step" is the axis)


M = Metric
METRICS: tuple[Metric, ...] = (
    # one entry per training step (learner.Learner.train_batch)
    M("step", "count", "train", tensorboard=False),
    M("loss", "", "train"),
    M("cos_ap", "cosine", "train"),
    M("cos_an", "cosine", "train"),
    M("active", "share", "train"),
    M("lr", "rate", "train"),
    M("step_s", "s", "train"),
    M("wait_s", "s", "train"),
    M("build_s", "s", "train"),
    M("queue_depth", "count", "train"),
    M("triplet_loss", "", "train"),
    M("cls_loss", "", "train"),
    M("cls_accuracy", "share", "train"),
    M("batch_loss", "", "train"),
    M("batch_accuracy", "share", "train"),
    # one entry per held-out evaluation (learner.scoring.scores.EvalResult + the learner's)
    M("step", "count", "eval", tensorboard=False),
    M("eer", "share", "eval"),
    M("eer_low", "share", "eval"),
    M("eer_high", "share", "eval"),
    M("eer_smoothed", "share", "eval"),
    M("threshold", "cosine", "eval"),
    M("min_dcf_01", "", "eval"),
    M("min_dcf_05", "", "eval"),
    M("trials", "count", "eval"),
    M("targets", "count", "eval"),
    M("eval_s", "s", "eval"),
    # the evaluation's calibration (learner.scoring.calibration.calibration_report)
    M("cllr", "bits", "eval"),
    M("min_cllr", "bits", "eval"),
    M("act_dcf_01", "", "eval"),
    M("min_dcf_01_cut", "", "eval"),
    M("fa_at_threshold", "share", "eval"),
    M("miss_at_threshold", "share", "eval"),
    M("asnorm_eer", "share", "eval"),
    M("asnorm_min_dcf_01", "", "eval"),
    # one entry per batch a producer builds
    M("worker", "count", "producers", tensorboard=False),
    M("build_s", "s", "producers", tensorboard=False),
    M("built", "count", "producers", tensorboard=False),
    M("batches_per_s", "rate", "producers", tensorboard=False),
)


def wait_share(wait_s: float, step_s: float) -> float:
    """The share of the learner's time spent waiting for data (0 when it has not run): one
    definition for the driver's summary, TensorBoard and the autoscaler."""
    busy = (wait_s or 0.0) + (step_s or 0.0)
    return (wait_s or 0.0) / busy if busy > 0 else 0.0


@dataclass(frozen=True)
class Shown:
    """How a metric is drawn: its label, the unit on the axis and the factor to that unit."""

    label: str
    unit: str
    scale: float

    @property
    def axis_title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


# A unit as a person reads it on an axis: shares as percent, seconds as milliseconds.
DISPLAY: dict[str, tuple[str, float]] = {
    "share": ("%", 100.0),
    "s": ("ms", 1000.0),
    "bits": ("bits", 1.0),
    "cosine": ("cosine", 1.0),
    "count": ("", 1.0),
    "rate": ("", 1.0),
    "": ("", 1.0),
}
LABELS = {
    "eer": "EER",
    "min_dcf_01": "minDCF(0.01)",
    "min_dcf_05": "minDCF(0.05)",
    "act_dcf_01": "actDCF(0.01)",
    "cllr": "Cllr",
    "min_cllr": "minCllr",
    "queue_depth": "queue depth",
    "batches_per_s": "batches/s",
}


def shown(name: str, stream: str = "eval") -> Shown:
    """How charts and TensorBoard draw ``name``: its label, axis unit and scale."""
    axis_unit, scale = DISPLAY[unit(name, stream)]
    return Shown(LABELS.get(name, name.replace("_", " ")), axis_unit, scale)


def tensorboard_tag(stream: str, name: str) -> tuple[str, float]:
    """The TensorBoard tag of a metric and the factor its values are written with: shares
    as percent (``eval/eer_pct``), so the EER reads as it does everywhere else."""
    if unit(name, stream) == "share":
        return f"{stream}/{name}_pct", 100.0
    return f"{stream}/{name}", 1.0


def fields(stream: str) -> tuple[str, ...]:
    """The Redis fields of ``stream``'s entries, in declaration order."""
    if stream not in STREAMS:
        raise ValueError(f"stream {stream!r}: one of {', '.join(STREAMS)}")
    return tuple(m.name for m in METRICS if m.stream == stream)


def scalars(stream: str) -> tuple[str, ...]:
    """The names TensorBoard draws of ``stream`` (as ``<stream>/<name>``)."""
    return tuple(m.name for m in METRICS if m.stream == stream and m.tensorboard)


def unit(name: str, stream: str = "eval") -> str:
    for m in METRICS:
        if m.name == name and m.stream == stream:
            return m.unit
    raise KeyError(f"no metric {name!r} in the {stream} stream")
