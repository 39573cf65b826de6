"""Triplet sampling and batch building.

``TripletSampler`` picks utterance indices: anchor and positive are two
different utterances of one speaker, the negative an utterance of another.
Anchor speakers are drawn evenly (a fresh shuffled pass over all anchor
speakers, then the next), so every speaker is seen equally often whatever its
number of utterances. A speaker with a single usable utterance is never an
anchor but can be a negative. The generator is seeded per producer and its
state is plain JSON, so a run can be reproduced and resumed.

``BatchBuilder`` turns sampled indices into a :class:`~cluster.batch.Batch`:
features from a :class:`~workers.cache.FeatureSource` and a random crop of
``T`` frames (a shorter utterance is tiled to ``T``, not dropped), copied
straight into the batch array in the cache's dtype. Per-segment normalisation
is the model's first layer (``learner.model.segment_norm``), not done here: it
is free on the learner's device, while in the producer the float16 round trip
alone cost more than the rest of a batch (see docs/pipeline.md). An utterance that turns out to be unusable is discarded from
the sampler with one warning and its slot re-drawn: a bad file never crashes
or stalls a producer.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from typing import Any

import numpy as np

from cluster.batch import Batch
from workers.audio import AudioError
from workers.augment import SPEEDS, speed_perturb
from workers.cache import FeatureSource
from workers.corpus import CorpusError, SpeakerDatabase
from workers.features import fit_frames

log = logging.getLogger(__name__)


class TripletSampler:
    def __init__(
        self,
        db: SpeakerDatabase,
        speakers: list[str] | None = None,
        triplets: int = 32,
        seed: int = 0,
    ) -> None:
        self.db = db
        self.triplets = triplets
        names = speakers if speakers is not None else db.speakers
        self.pool: dict[str, list[int]] = {
            s: list(db.by_speaker[s]) for s in names if db.by_speaker.get(s)
        }
        self.rng = np.random.default_rng(seed)
        self._order: list[str] = []
        self.discarded: dict[int, str] = {}
        self._check()

    def _check(self) -> None:
        if len(self.pool) < 2 or not self.anchors():
            raise CorpusError(
                f"cannot sample triplets: {len(self.pool)} speaker(s) with usable audio and "
                f"{len(self.anchors())} with two or more utterances (need 2 and 1)"
            )

    def anchors(self) -> list[str]:
        return sorted(s for s, utts in self.pool.items() if len(utts) >= 2)

    def discard(self, index: int, reason: str = "unusable") -> None:
        """Never draw utterance ``index`` again."""
        speaker = self.db.utterances[index].speaker
        utts = self.pool.get(speaker)
        if utts and index in utts:
            utts.remove(index)
            if not utts:
                del self.pool[speaker]
            self.discarded[index] = reason
            self._order = [s for s in self._order if s in self.pool and len(self.pool[s]) >= 2]
        self._check()

    def _next_anchor(self) -> str:
        if not self._order:
            self._check()  # every anchor may have been discarded since the last pass
            anchors = self.anchors()
            self._order = [anchors[i] for i in self.rng.permutation(len(anchors))]
        return self._order.pop()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices [3B], speaker labels [3B])`` laid out anchors, positives, negatives."""
        b = self.triplets
        idx = np.empty(3 * b, dtype=np.int64)
        labels = np.empty(3 * b, dtype=np.int32)
        names = sorted(self.pool)
        for i in range(b):
            spk = self._next_anchor()
            a, p = self.rng.choice(self.pool[spk], size=2, replace=False)
            # Uniform over the other speakers: skip the anchor's own position.
            j = int(self.rng.integers(len(names) - 1))
            neg = names[j if j < bisect.bisect_left(names, spk) else j + 1]
            n = self.pool[neg][int(self.rng.integers(len(self.pool[neg])))]
            idx[i], idx[b + i], idx[2 * b + i] = a, p, n
            labels[i] = labels[b + i] = self.db.speaker_index[spk]
            labels[2 * b + i] = self.db.speaker_index[neg]
        return idx, labels

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": list(self._order)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._order = [s for s in state["order"] if s in self.pool]


class BatchBuilder:
    def __init__(
        self,
        sampler: TripletSampler,
        source: FeatureSource,
        frames: int,
        dtype: str = "float16",
        worker_id: int = 0,
        spec: str = "",
        augmenter: Any = None,
    ) -> None:
        """With an ``augmenter`` (:class:`workers.augment.Augmenter`), ``source`` is a
        :class:`~workers.cache.WaveSource`: segments are cropped from speech, augmented and
        turned into log-mel here."""
        self.sampler, self.source, self.frames = sampler, source, frames
        self.dtype = np.dtype(dtype)
        self.worker_id, self.spec = worker_id, spec or source.cfg.fingerprint()
        self.seq = 0
        self.rejected: dict[str, int] = {}
        self.augmenter = augmenter
        c = source.cfg
        self.samples = (frames - 1) * c.hop_length + c.win_length  # one segment of audio

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
        x = aug.waveform(speed_perturb(x, factor, aug.sr), rng)
        feats = self.source.logmel(np.pad(x, (0, max(0, self.samples - len(x)))))
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
            features = np.empty((len(idx), self.frames, self.source.cfg.n_mels), self.dtype)
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
                labels = (labels + speeds * len(self.sampler.db.speakers)).astype(np.int32)
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
