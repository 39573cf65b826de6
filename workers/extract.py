"""Extraction, audio -> speech -> features: what the caches store, computed from a file.

Two extractors share one decoding path (``speech_parts``): a file is decoded, made mono,
resampled and trimmed of silence (``workers.audio``); a long one (a multi-hour recording)
block by block, so memory is bounded by the block, never by the file.

- :class:`LogMelExtractor`: the speech's log-mel features, ``[frames, n_mels]`` in the
  config's dtype (not normalised: normalisation is the model's first layer);
- :class:`SpeechExtractor`: the speech itself as int16, which augmenting producers crop,
  augment and turn into log-mel themselves.

Each has a ``kind`` and a ``spec`` (what its output depends on): the folder its results
are cached under (:class:`workers.cache.FeatureStore`).

    feats = LogMelExtractor(cfg)(path, seconds)     # seconds: the manifest's duration
    speech = SpeechExtractor(cfg)(path, seconds)    # int16
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from cluster.config import FeatureConfig
from workers.audio import NoSpeech, TooShort, audio_blocks, load_audio, remove_silence
from workers.features import LogMel
from workers.quality import QualityMeter

LONG_SECONDS = 600.0  # files longer than this are decoded block by block
BLOCK_SECONDS = 60.0


class Extractor(Protocol):
    kind: str  # the cache folder: "features" or "waves"
    spec: str  # a fingerprint of every setting the output depends on

    def __call__(self, path: Path, seconds: float) -> np.ndarray: ...


def speech_parts(
    path: Path, seconds: float, cfg: FeatureConfig, meter: QualityMeter | None = None
) -> Iterator[np.ndarray]:
    """The speech of a file: one part for a file up to ``LONG_SECONDS``; for a longer one,
    block by block (VAD relative to each block's loudest frame: a quiet hour still counts).
    ``NoSpeech`` when no part has any. ``meter``: fed each raw block before silence
    removal (``workers.quality``), for the input's quality."""
    blocks = (
        [load_audio(path, cfg.sample_rate)]
        if seconds <= LONG_SECONDS
        else audio_blocks(path, cfg.sample_rate, BLOCK_SECONDS)
    )
    found = False
    for block in blocks:
        if meter is not None:
            meter.add(block)
        try:
            speech = remove_silence(
                block,
                cfg.sample_rate,
                cfg.win_length,
                cfg.hop_length,
                cfg.vad_db,
                cfg.vad_floor_db,
                path=path,
            )
        except NoSpeech:
            if seconds <= LONG_SECONDS:
                raise
            continue
        found = True
        yield speech
    if not found:
        raise NoSpeech(path, "no speech detected (silent or below the energy floor)")


class LogMelExtractor:
    """Log-mel features of a file's speech, each part on its own (no frame spans a gap)."""

    kind = "features"

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg, self.logmel, self.spec = cfg, LogMel(cfg), cfg.fingerprint()

    def __call__(self, path: Path, seconds: float) -> np.ndarray:
        parts = [
            self.logmel(s).astype(self.cfg.dtype)
            for s in speech_parts(path, seconds, self.cfg)
            if len(s) >= self.logmel.win
        ]
        if not parts:
            raise TooShort(path, "too little speech after silence removal")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def wave_spec(cfg: FeatureConfig) -> str:
    """What a cached speech waveform depends on: the rate and the VAD settings."""
    parts = (cfg.sample_rate, cfg.win_length, cfg.hop_length, cfg.vad_db, cfg.vad_floor_db)
    return "wave-" + hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


class SpeechExtractor:
    """A file's speech (decoded, resampled, VAD-trimmed) as int16."""

    kind = "waves"

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg, self.spec = cfg, wave_spec(cfg)

    def __call__(self, path: Path, seconds: float) -> np.ndarray:
        speech = np.concatenate(list(speech_parts(path, seconds, self.cfg)))
        if len(speech) < self.cfg.win_length:
            raise TooShort(path, "too little speech after silence removal")
        return (np.clip(speech, -1.0, 32767 / 32768) * 32768).astype(np.int16)
