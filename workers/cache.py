"""Per-utterance log-mel features: from the on-disk cache when it has them, computed otherwise.

Cache layout: ``<cache_root>/features/<corpus-key>/<feature-spec>/<hash>.npy``, the
hash of the file's relative path, size and mtime (the manifest's key), so a replaced
or repaired file is extracted again
(float16 by default, not normalised: normalisation is per segment, after the
crop). A file that cannot be used leaves ``<hash>.rej`` holding the reason, so
the next pass skips it without decoding it again. Every write goes to a
temporary name first and is renamed into place, so a killed writer leaves no
half-written entry and a restarted one simply carries on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import FeatureConfig
from cluster.files import atomic_write, atomic_write_text
from workers.audio import (
    AudioError,
    NoSpeech,
    TooShort,
    audio_blocks,
    load_speech,
    remove_silence,
)
from workers.corpus import SpeakerDatabase, Utterance, corpus_key, default_cache_root
from workers.features import LogMel

log = logging.getLogger(__name__)


class RejectedAudio(AudioError):
    """An utterance a previous pass already found unusable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, f"{reason} (recorded in the feature cache)")
        self.reason = reason


class Quarantined(AudioError):
    """An utterance whose decoding killed a producer ``QUARANTINE_STRIKES`` times (out of
    memory, a crashing decoder): skipped for the rest of the run and counted."""

    reason = "quarantined"


class FeatureStore:
    """Read and write one corpus's cached features for one feature spec."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_corpus(cls, corpus: Path, cfg: FeatureConfig, cache_dir: str = "") -> FeatureStore:
        """The store of ``corpus``'s features for the feature spec of ``cfg``."""
        key = corpus_key(Path(corpus))
        return cls(default_cache_root(cache_dir) / "features" / key / cfg.fingerprint())

    @classmethod
    def for_waves(cls, corpus: Path, cfg: FeatureConfig, cache_dir: str = "") -> FeatureStore:
        """The store of ``corpus``'s speech waveforms (int16) that augmenting producers read."""
        key = corpus_key(Path(corpus))
        return cls(default_cache_root(cache_dir) / "waves" / key / wave_spec(cfg))

    def key(self, utt: Utterance) -> str:
        """The entry of one version of a file: its path, size and mtime, as in the manifest.
        A file replaced by other audio, or a rejected file repaired, gets a fresh entry."""
        ident = f"{utt.path}\0{utt.size}\0{utt.mtime_ns}"
        return hashlib.sha1(ident.encode()).hexdigest()[:20]

    def npy(self, utt: Utterance) -> Path:
        return self.root / f"{self.key(utt)}.npy"

    def rej(self, utt: Utterance) -> Path:
        return self.root / f"{self.key(utt)}.rej"

    def exists(self) -> bool:
        return self.root.is_dir() and any(self.root.glob("*.npy"))

    def status(self, utt: Utterance) -> str | None:
        """``"done"``, ``"rejected"`` or ``None`` (not yet extracted)."""
        if self.npy(utt).exists():
            return "done"
        if self.rej(utt).exists():
            return "rejected"
        return None

    def save(self, utt: Utterance, feats: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.npy(utt), lambda fh: np.save(fh, feats), fsync=False)

    def reject(self, utt: Utterance, reason: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.rej(utt), json.dumps({"path": utt.path, "reason": reason}), fsync=False
        )

    def rejection(self, utt: Utterance) -> str:
        try:
            return json.loads(self.rej(utt).read_text())["reason"]
        except (OSError, ValueError, KeyError):
            return "rejected"

    def load(self, utt: Utterance) -> np.ndarray:
        return np.load(self.npy(utt), mmap_mode="r")


LONG_SECONDS = 600.0  # files longer than this are decoded block by block
BLOCK_SECONDS = 60.0


def extract(db: SpeakerDatabase, index: int, cfg: FeatureConfig, logmel: LogMel) -> np.ndarray:
    """Decode, drop silence, compute log-mel: ``[frames, n_mels]`` in ``cfg.dtype``.

    A long file (a multi-hour recording) is decoded in blocks of ``BLOCK_SECONDS``, each
    trimmed and turned into features on its own, so a producer's memory is bounded by the
    block, never by the file.
    """
    path = db.abspath(index)
    if db.utterances[index].seconds > LONG_SECONDS:
        return _extract_blocks(path, cfg, logmel)
    speech = load_speech(path, cfg)
    if len(speech) < logmel.win:
        raise TooShort(path, "too little speech after silence removal")
    return logmel(speech).astype(cfg.dtype)


def _speech_blocks(path: Path, cfg: FeatureConfig):
    """The speech of a long file, block by block (VAD relative to each block's loudest frame:
    a quiet hour still counts); ``NoSpeech`` when no block has any."""
    found = False
    for block in audio_blocks(path, cfg.sample_rate, BLOCK_SECONDS):
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
            continue
        found = True
        yield speech
    if not found:
        raise NoSpeech(path, "no speech detected (silent or below the energy floor)")


def _extract_blocks(path: Path, cfg: FeatureConfig, logmel: LogMel) -> np.ndarray:
    parts = [logmel(s).astype(cfg.dtype) for s in _speech_blocks(path, cfg) if len(s) >= logmel.win]
    if not parts:
        raise TooShort(path, "too little speech after silence removal")
    return np.concatenate(parts)


class FeatureSource:
    """Features of utterance ``i`` of a database: cache, else memory, else computed.

    Computed features are written to the cache when ``write_cache`` is set, and
    kept in an in-memory LRU bounded by ``memory_bytes``. Open cache files are
    memory-mapped and kept in a bounded LRU as well, so the OS page cache is
    shared between producers on one machine.
    """

    def __init__(
        self,
        db: SpeakerDatabase,
        cfg: FeatureConfig,
        store: FeatureStore | None = None,
        write_cache: bool = False,
        memory_bytes: int = 256 << 20,
        max_open: int = 4096,
        guard: Any = None,
    ) -> None:
        """``guard`` (a producer's :class:`DecodeGuard`) is told which file is being decoded,
        so a file that kills its producer is blamed and, the second time, quarantined."""
        self.db, self.cfg, self.store, self.write_cache = db, cfg, store, write_cache
        self.guard = guard
        self.logmel = LogMel(cfg)
        self.memory_bytes = memory_bytes
        self.max_open = max_open
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lru_bytes = 0
        self.hits = self.computed = 0

    def get(self, index: int) -> np.ndarray:
        cached = self._lru.get(index)
        if cached is not None:
            self._lru.move_to_end(index)
            self.hits += 1
            return cached
        utt = self.db.utterances[index]
        feats = None
        if self.store is not None:
            status = self.store.status(utt)
            if status == "done":
                try:
                    feats = self.store.load(utt)
                except (OSError, ValueError) as exc:  # a damaged entry: recompute it
                    log.warning("cache entry for %s is unreadable (%s); recomputing", utt.path, exc)
            elif status == "rejected":
                raise RejectedAudio(utt.path, self.store.rejection(utt))
        if feats is None:
            try:
                feats = self._extract(index, utt)
            except Quarantined:
                raise
            except AudioError as exc:
                if self.store is not None and self.write_cache:
                    self._write(self.store.reject, utt, exc.reason)
                raise
            self.computed += 1
            if self.store is not None and self.write_cache:
                self._write(self.store.save, utt, feats)
        self._remember(index, feats)
        return feats

    def compute(self, index: int) -> np.ndarray:
        """What this source keeps of an utterance, computed from its audio."""
        return extract(self.db, index, self.cfg, self.logmel)

    def _extract(self, index: int, utt: Utterance) -> np.ndarray:
        if self.guard is None:
            return self.compute(index)
        if not self.guard.begin(utt.path):
            raise Quarantined(utt.path, "its decoding killed a producer twice; skipped")
        try:
            return self.compute(index)
        finally:
            self.guard.end()

    def _write(self, write, utt: Utterance, value) -> None:
        """A cache that cannot be written (full disk, read-only) costs speed, never the run:
        say so once and go on computing features without writing them."""
        try:
            write(utt, value)
        except OSError as exc:
            self.write_cache = False
            log.warning(
                "cannot write the feature cache %s (%s): going on without writing to it",
                self.store.root,
                exc,
            )

    def _remember(self, index: int, feats: np.ndarray) -> None:
        # Memory-mapped arrays cost file handles, not memory: bound them by count.
        size = 0 if isinstance(feats, np.memmap) else feats.nbytes
        self._lru[index] = feats
        self._lru_bytes += size
        while self._lru and (self._lru_bytes > self.memory_bytes or len(self._lru) > self.max_open):
            _, old = self._lru.popitem(last=False)
            self._lru_bytes -= 0 if isinstance(old, np.memmap) else old.nbytes


def wave_spec(cfg: FeatureConfig) -> str:
    """What a cached speech waveform depends on: the rate and the VAD settings."""
    parts = (cfg.sample_rate, cfg.win_length, cfg.hop_length, cfg.vad_db, cfg.vad_floor_db)
    return "wave-" + hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def speech_int16(db: SpeakerDatabase, index: int, cfg: FeatureConfig) -> np.ndarray:
    """Decoded, resampled, VAD-trimmed speech as int16 (long files in blocks)."""
    path = db.abspath(index)
    if db.utterances[index].seconds > LONG_SECONDS:
        speech = np.concatenate(list(_speech_blocks(path, cfg)))
    else:
        speech = load_speech(path, cfg)
    if len(speech) < cfg.win_length:
        raise TooShort(path, "too little speech after silence removal")
    return (np.clip(speech, -1.0, 32767 / 32768) * 32768).astype(np.int16)


class WaveSource(FeatureSource):
    """Speech waveforms (int16) of a database's utterances, cached like features, for the
    producers that augment audio: decoded once, never again."""

    @classmethod
    def for_corpus(cls, db: SpeakerDatabase, cfg: FeatureConfig, mode: str, cache_dir: str = ""):
        store = None if mode == "off" else FeatureStore.for_waves(db.root, cfg, cache_dir)
        return cls(db, cfg, store, write_cache=mode == "readwrite")

    def compute(self, index: int) -> np.ndarray:
        return speech_int16(self.db, index, self.cfg)
