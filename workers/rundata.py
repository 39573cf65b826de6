"""A run's data, opened the same way by every caller: the corpus, its speaker split and
the chain that turns an utterance into features.

The driver, the producers, the learner's held-out evaluation, ``workers.precompute``
and the benchmarks all come here, so they agree on which corpus a config names (the
synthetic one when ``data.path`` is empty), which speakers are held out, and how the
feature cache is used (``data.feature_cache``: ``readwrite``, ``read`` or ``off``).
With augmentation on, producers read :meth:`RunData.waves` (cached speech) instead.

    data = RunData.open(cfg.data, cfg.synthetic)      # scan (manifest-cached) and split
    train = data.source(cfg.features)                 # features of any utterance of the corpus
    held_db, held = data.held_out(cfg.features)       # the held-out speakers only
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import DataConfig, FeatureConfig, SyntheticConfig
from workers.audio import AudioError
from workers.cache import MEMORY_BYTES, CachedSource, FeatureStore
from workers.corpus import CorpusError, SpeakerDatabase
from workers.extract import Extractor, LogMelExtractor, SpeechExtractor

log = logging.getLogger(__name__)
SPEECH_SAMPLE = 16  # training files the driver decodes before a run starts, at most


def resolve_corpus(data: DataConfig, synthetic: SyntheticConfig) -> Path:
    """The corpus root: ``data.path``, or the synthetic corpus generated into the cache."""
    if data.path:
        return Path(data.path)  # expanded by the scan (it may name several roots)
    from workers.synthetic import ensure_corpus

    return ensure_corpus(synthetic, data.cache_dir)


@dataclass(frozen=True)
class RunData:
    db: SpeakerDatabase
    train: list[str]  # speaker names
    held: list[str]
    cfg: DataConfig

    @classmethod
    def open(cls, data: DataConfig, synthetic: SyntheticConfig) -> RunData:
        """Scan the corpus a config names and split its speakers; ``CorpusError`` if unusable.
        With ``data.snapshot`` (the driver's scan of this run) that is loaded instead: a
        producer starts in seconds on a million utterances; unreadable, the corpus is
        scanned as usual."""
        if data.snapshot:
            try:
                return cls.of(SpeakerDatabase.load(data.snapshot), data)
            except (OSError, ValueError, KeyError) as exc:
                log.info("cannot read the corpus snapshot %s (%s): scanning", data.snapshot, exc)
        db = SpeakerDatabase.scan(
            resolve_corpus(data, synthetic),
            data.layout,
            data.min_seconds,
            data.cache_dir,
            mic=data.vctk_mic,
        )
        return cls.of(db, data)

    @classmethod
    def of(cls, db: SpeakerDatabase, data: DataConfig) -> RunData:
        """An already scanned database, split as ``data`` says."""
        train, held = db.split(
            data.eval_fraction, data.split_seed, data.min_eval_speakers, data.eval_min_utterances
        )
        return cls(db, train, held, data)

    def classes(self, copies: int = 1) -> np.ndarray:
        """Batch label (a speaker's index in the corpus, by sorted name: the same in every
        producer) -> the speaker's class among the training speakers (sorted), -1 for a
        held-out one. What the classifier losses train on. With speed perturbation each
        speaker has ``copies`` versions: label ``s + k * n`` is class ``c + k * n_train``."""
        n, n_train = len(self.db.speakers), len(self.train)
        out = np.full(n * copies, -1, np.int32)
        for k, name in enumerate(sorted(self.train)):
            for copy in range(copies):
                out[self.db.speaker_index[name] + copy * n] = k + copy * n_train
        return out

    def training_utterances(self) -> list[int]:
        """The training speakers' utterance indices, speaker by speaker."""
        return [i for s in self.train for i in self.db.by_speaker[s]]

    def check_speech(self, features: FeatureConfig, sample: int = SPEECH_SAMPLE) -> None:
        """Fail fast on audio without speech (silent, or below the VAD floor): decode up to
        ``sample`` training utterances (seeded; through the feature cache, so the work is
        kept) and raise ``CorpusError``, with the counts by reason, when none is usable.
        Returns at the first usable one."""
        utts = self.training_utterances()
        pick = np.random.default_rng(0).permutation(len(utts))[:sample]
        source, reasons = self.source(features), {}
        for k in pick:
            try:
                source.get(utts[k])
                return
            except AudioError as exc:
                reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
        counts = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
        raise CorpusError(
            f"no speech found in {len(pick)} training files of {self.db.root} ({counts}): is "
            f"the audio silent, or quieter than features.vad_floor_db "
            f"({features.vad_floor_db:g} dBFS)?"
        )

    def waves(self, features: FeatureConfig, guard: Any = None) -> CachedSource:
        """Speech waveforms of the corpus for augmenting producers, cached as configured."""
        return self._cached(SpeechExtractor(features), self.db, MEMORY_BYTES, guard)

    def store(self, features: FeatureConfig) -> FeatureStore:
        return FeatureStore.of(self.db.root, LogMelExtractor(features), self.cfg.cache_dir)

    def source(
        self,
        features: FeatureConfig,
        db: SpeakerDatabase | None = None,
        memory_bytes: int = MEMORY_BYTES,
        guard: Any = None,
    ) -> CachedSource:
        """Log-mel features of ``db`` (default: the whole corpus), cached as configured;
        ``guard``: see :class:`~workers.cache.CachedSource`."""
        return self._cached(LogMelExtractor(features), db or self.db, memory_bytes, guard)

    def _cached(
        self, extractor: Extractor, db: SpeakerDatabase, memory_bytes: int, guard: Any = None
    ) -> CachedSource:
        mode = self.cfg.feature_cache
        store = None if mode == "off" else FeatureStore.of(db.root, extractor, self.cfg.cache_dir)
        return CachedSource(
            db,
            extractor,
            store,
            write_cache=mode == "readwrite",
            memory_bytes=0 if mode == "off" else memory_bytes,
            guard=guard,
        )

    def held_out(self, features: FeatureConfig) -> tuple[SpeakerDatabase, CachedSource]:
        """The held-out speakers' database and its feature source (no memory LRU: the
        evaluator keeps every held-out utterance's features itself)."""
        sub = self.db.subset(self.held)
        return sub, self.source(features, sub, memory_bytes=0)
