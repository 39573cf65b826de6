"""The batch stage: a :class:`~cluster.batch.Batch` from the utterances a sampler draws.

``BatchBuilder`` takes the indices of :class:`~workers.sampler.TripletSampler`, gets each
utterance from its source (:class:`~workers.cache.CachedSource`) and makes a segment of
``T`` frames: a random crop of the cached log-mel (a shorter utterance is tiled to ``T``,
not dropped), copied straight into the batch array in the cache's dtype; or, with
augmentation, a crop of cached speech at the triplet's speed, through the augmentation
chain (:mod:`workers.augment`), log-mel and SpecAugment. Per-segment normalisation is
the model's first layer (``learner.model``), not done here: it is free on the learner's
device, while in the producer the float16 round trip alone cost more than the rest of a
batch (see docs/pipeline.md). An utterance that turns out to be unusable is discarded
from the sampler with one warning and the batch re-drawn: a bad file never crashes or
stalls a producer.

    builder = BatchBuilder(sampler, source, frames=160, features=cfg.features)
    batch = builder.build()
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from cluster.batch import Batch
from cluster.config import FeatureConfig
from workers.audio import AudioError
from workers.augment import SPEEDS, Augmenter, speed_perturb
from workers.cache import CachedSource
from workers.corpus import CorpusError
from workers.features import LogMel, fit_frames
from workers.sampler import TripletSampler

log = logging.getLogger(__name__)


class BatchBuilder:
    """Batches of ``frames``-frame segments of the utterances ``sampler`` draws.

    ``source.get(i)`` gives utterance ``i``'s log-mel features, or with an ``augmenter``
    (:class:`workers.augment.Augmenter`) its speech (int16: a
    :class:`~workers.extract.SpeechExtractor` source): then each segment is cropped from
    speech, augmented and turned into log-mel here, with ``features``'s settings. Crops
    and augmentation draw from ``sampler.rng``, whose state travels in each batch.
    """

    def __init__(
        self,
        sampler: TripletSampler,
        source: CachedSource,
        frames: int,
        features: FeatureConfig,
        worker_id: int = 0,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.sampler, self.source, self.frames = sampler, source, frames
        self.features, self.dtype = features, np.dtype(features.dtype)
        self.worker_id, self.spec = worker_id, features.fingerprint()
        self.seq = 0
        self.rejected: dict[str, int] = {}
        self.augmenter = augmenter
        self.logmel = LogMel(features) if augmenter is not None else None
        # One segment of audio.
        self.samples = (frames - 1) * features.hop_length + features.win_length

    def _augmented(self, index: int, speed: int, out: np.ndarray) -> None:
        """Crop speech for ``frames`` frames at ``SPEEDS[speed]``, augment, log-mel, mask."""
        rng, aug = self.sampler.rng, self.augmenter
        wave = self.source.get(index)
        factor = SPEEDS[speed]
        need = int(np.ceil(self.samples * factor)) + 1
        if len(wave) > need:
            start = int(rng.integers(len(wave) - need + 1))
            wave = wave[start : start + need]
        x = np.resize(wave, need).astype(np.float32) / 32768.0  # a short one is tiled
        x = speed_perturb(x, factor, aug.sr)
        feats = aug.features(np.pad(x, (0, max(0, self.samples - len(x)))), rng, self.logmel)
        out[...] = aug.spec_mask(fit_frames(feats, self.frames, 0), rng)

    def _speeds(self, rows: int) -> np.ndarray:
        """Per row, the speed index: one for each triplet's anchor and positive, one for its
        negative."""
        b = rows // 3
        out = np.zeros(rows, np.int32)
        for i in range(b):
            out[i] = out[b + i] = self.augmenter.speed_index(self.sampler.rng)
            out[2 * b + i] = self.augmenter.speed_index(self.sampler.rng)
        return out

    def _segment(self, index: int, out: np.ndarray) -> None:
        feats = self.source.get(index)
        extra = len(feats) - self.frames
        start = int(self.sampler.rng.integers(extra + 1)) if extra > 0 else 0
        out[...] = fit_frames(feats, self.frames, start)

    def build(self, max_redraws: int = 1000) -> Batch:
        t0 = time.perf_counter()
        for _ in range(max_redraws):
            idx, labels = self.sampler.sample()
            features = np.empty((len(idx), self.frames, self.features.n_mels), self.dtype)
            speeds = self._speeds(len(idx)) if self.augmenter else None
            try:
                for row, i in enumerate(idx):
                    if speeds is None:
                        self._segment(int(i), features[row])
                    else:
                        self._augmented(int(i), int(speeds[row]), features[row])
            except AudioError as exc:
                self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
                log.warning("worker %d skips %s", self.worker_id, exc)
                self.sampler.discard(int(i), exc.reason)
                continue  # re-draw the whole batch without the bad utterance
            if speeds is not None:  # a speed-perturbed copy is another speaker
                labels = (labels + speeds * self.sampler.n_speakers).astype(np.int32)
            batch = Batch(
                features,
                labels,
                self.worker_id,
                self.seq,
                time.time(),
                time.perf_counter() - t0,
                self.spec,
                json.dumps(self.sampler.state()),
            )
            self.seq += 1
            return batch
        raise CorpusError(f"worker {self.worker_id}: {max_redraws} batches in a row hit bad audio")
