"""Checking config data against the schema: types, choices, ranges and ``--set`` overrides.

Generic over the frozen dataclasses of :mod:`cluster.config`; an error names the key.

    build(RunConfig, {"learner": {"lr": 3e-4}})        # -> RunConfig, or ConfigError
    parse_override("learner.lr=3e-4")                  # -> {"learner": {"lr": Override}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from cluster.corpora import LAYOUTS, VCTK_MICS


class ConfigError(ValueError):
    """A preset, file or override that does not fit the config schema."""


# How a producer draws anchor speakers (workers.sampler.TripletSampler): uniformly, by the
# square root of their utterances, or by their utterances.
SAMPLER_WEIGHTINGS = ("speaker", "sqrt", "utterance")

_CHOICES = {
    ("data", "layout"): {"auto", *LAYOUTS},
    ("data", "vctk_mic"): set(VCTK_MICS),
    ("data", "feature_cache"): {"readwrite", "read", "off"},
    ("features", "dtype"): {"float16", "float32"},
    ("model", "input_norm"): {"cmvn", "cmn", "gain"},
    ("model", "pooling"): {"mean", "stats"},
    ("sampler", "weighting"): set(SAMPLER_WEIGHTINGS),
    ("learner", "mining"): {"none", "hard", "semihard"},
    ("learner", "loss"): {"triplet", "softmax+triplet", "aam+triplet"},
    ("learner", "schedule"): {"constant", "cosine", "exponential"},
    ("learner", "device"): {"auto", "cpu", "gpu"},
    ("learner", "mixed_precision"): {"auto", "on", "off"},
}


@dataclass(frozen=True)
class _Override:
    """A ``--set`` value as typed and as YAML reads it: a string field takes the text as
    typed (``0755`` stays "0755", ``off`` stays "off"), other fields the parsed value."""

    text: str
    parsed: Any


# Allowed values of numeric fields: (lowest, highest), each None for no bound; "lowest" is
# exclusive where it is written as ``(">", x)``. Every float must also be finite.
_RANGES: dict[tuple[str, str], tuple[Any, Any]] = {
    ("features", "sample_rate"): (1, None),
    ("features", "n_mels"): (1, None),
    ("features", "win_ms"): ((">", 0), None),
    ("features", "hop_ms"): ((">", 0), None),
    ("features", "n_fft"): (2, None),
    ("features", "fmin"): (0, None),
    ("features", "fmax"): ((">", 0), None),
    ("data", "min_seconds"): (0, None),
    ("data", "eval_fraction"): (0, 0.9),
    ("data", "min_eval_speakers"): (0, None),
    ("data", "eval_min_utterances"): (2, None),
    ("synthetic", "speakers"): (2, None),
    ("synthetic", "utterances"): (2, None),
    ("synthetic", "seconds"): ((">", 0), None),
    ("augment", "speed_prob"): (0, 1),
    ("augment", "reverb_prob"): (0, 1),
    ("augment", "noise_prob"): (0, 1),
    ("augment", "channel_prob"): (0, 1),
    ("augment", "noise_dir_share"): (0, 1),
    ("augment", "simulated_rooms"): (1, None),
    ("augment", "gain_db"): (0, None),
    ("augment", "time_masks"): (0, None),
    ("augment", "time_width"): (0, None),
    ("augment", "freq_masks"): (0, None),
    ("augment", "freq_width"): (0, None),
    ("sampler", "triplets"): (1, None),
    ("sampler", "frames"): (1, None),
    ("producer", "count"): (0, None),
    ("producer", "max_count"): (1, None),
    ("producer", "autoscale_wait_share"): (0, 1),
    ("producer", "queue_size"): (1, None),
    ("producer", "num_cpus"): (0, None),
    ("producer", "put_timeout"): ((">", 0), None),
    ("model", "width"): ((">", 0), None),
    ("model", "blocks"): (1, None),
    ("model", "embedding_dim"): (1, None),
    ("learner", "lr"): (0, None),  # 0 freezes the weights (a test of the collapse guard uses it)
    ("learner", "max_steps"): (0, None),
    ("learner", "max_minutes"): (0, None),
    ("learner", "margin"): (0, None),
    ("learner", "batch_weight"): (0, None),
    ("learner", "batch_scale"): ((">", 0), None),
    ("learner", "eval_every"): (0, None),
    ("learner", "eval_trials"): (2, None),
    ("learner", "eval_bootstrap"): (0, None),
    ("learner", "eval_smoothing"): ((">", 0), 1),
    ("learner", "average_last"): (0, None),
    ("learner", "cohort_speakers"): (0, None),
    ("learner", "warmup_steps"): (0, None),
    ("learner", "lr_floor"): (0, 1),
    ("learner", "weight_decay"): (0, None),
    ("learner", "pretrain_steps"): (0, None),
    ("learner", "cls_weight"): (0, None),
    ("learner", "aam_margin"): (0, 1.5),
    ("learner", "aam_scale"): ((">", 0), None),
    ("learner", "aam_margin_start"): (0, None),
    ("learner", "aam_margin_steps"): (0, None),
    ("learner", "checkpoint_every"): (0, None),
    ("learner", "checkpoint_minutes"): (0, None),
    ("learner", "max_restarts"): (0, None),
    ("learner", "start_timeout"): ((">", 0), None),
    ("learner", "keep_checkpoints"): (1, None),
    ("learner", "prefetch"): (1, None),
    ("learner", "data_timeout"): (0, None),
    ("metrics", "stream_maxlen"): (1, None),
    ("metrics", "buffer"): (1, None),
    ("metrics", "tensorboard_every"): (1, None),
    ("metrics", "tensorboard_max_mb"): ((">", 0), None),
}


def _check_address(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(
            f"{key}: {value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0)"
        ) from None


def _check_range(key: str, value: Any, rule: tuple[Any, Any]) -> None:
    low, high = rule
    if isinstance(low, tuple):
        if not value > low[1]:
            raise ConfigError(f"{key}: must be greater than {low[1]}, got {value!r}")
    elif low is not None and not value >= low:
        raise ConfigError(f"{key}: must be at least {low}, got {value!r}")
    if high is not None and not value <= high:
        raise ConfigError(f"{key}: must be at most {high}, got {value!r}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if isinstance(value, _Override):
        value = value.text if hint is str else value.parsed
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, str):  # "nan", "inf" and YAML 1.1's dotless "3e-4" are strings
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if isinstance(data, _Override):
        data = data.parsed
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
            kwargs[name] = build(hint, value, prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(value, hint, key)
            section = prefix.rstrip(".")
            allowed = _CHOICES.get((section, name))
            if allowed and kwargs[name] not in allowed:
                raise ConfigError(f"{key}: {kwargs[name]!r} is not one of {sorted(allowed)}")
            if (section, name) == ("metrics", "redis_bind"):
                _check_address(key, kwargs[name])
            if (section, name) in _RANGES:
                _check_range(key, kwargs[name], _RANGES[(section, name)])
    obj = cls(**kwargs)
    if prefix == "features.":
        check_features(obj)
    return obj


def check_features(f: Any) -> None:
    """Feature settings that are valid one by one but not together: refused at load time,
    naming the keys (else a run trains on constant features, or fails in the learner)."""
    nyquist = f.sample_rate / 2
    if not f.fmin < f.fmax:
        raise ConfigError(
            f"features.fmin ({f.fmin:g} Hz) must be below features.fmax ({f.fmax:g} Hz)"
        )
    if f.fmax > nyquist:
        raise ConfigError(
            f"features.fmax ({f.fmax:g} Hz) must be at most half of features.sample_rate "
            f"({f.sample_rate} Hz): {nyquist:g} Hz"
        )
    if f.win_length < 2 or f.hop_length < 1:
        raise ConfigError(
            f"features.win_ms ({f.win_ms:g} ms) and features.hop_ms ({f.hop_ms:g} ms) give a "
            f"window of {f.win_length} and a hop of {f.hop_length} samples at "
            f"{f.sample_rate} Hz: both must be at least 2 and 1 samples"
        )
    if f.n_fft < f.win_length:
        raise ConfigError(
            f"features.n_fft ({f.n_fft}) must be at least the window, features.win_ms "
            f"({f.win_ms:g} ms = {f.win_length} samples at {f.sample_rate} Hz)"
        )
    if f.n_mels > f.n_fft // 2:
        raise ConfigError(
            f"features.n_mels ({f.n_mels}) must be at most half of features.n_fft ({f.n_fft}): "
            "more mel bands than FFT bins leaves bands empty"
        )


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"learner.lr=3e-4"`` -> ``{"learner": {"lr": 3e-4}}``: the value parsed as YAML, or
    kept as typed where the field is a string."""
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
    out: dict[str, Any] = {parts[-1]: _Override(raw.strip(), value)}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out
