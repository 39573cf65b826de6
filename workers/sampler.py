"""Triplet sampling: which utterances make each triplet of a batch.

``TripletSampler`` picks utterance indices: anchor and positive are two
different utterances of one speaker, the negative an utterance of another.
Anchor speakers are drawn evenly (a fresh shuffled pass over all anchor
speakers, then the next), so every speaker is seen equally often whatever its
number of utterances; with ``weighting`` ``sqrt`` or ``utterance`` they are drawn
at random in proportion to the square root or the number of their utterances
(speakers with many recordings, whose pairs cross recordings, then teach more).
A speaker with a single usable utterance is never an anchor but can be a negative.
The generator is seeded per producer and its state is plain JSON, so a run can be
reproduced and resumed. The batch stage (:mod:`workers.batches`) turns the indices into a
batch.

    sampler = TripletSampler(db, train_speakers, triplets=32, seed=0)
    indices, labels = sampler.sample()      # [3B]: anchors, positives, negatives
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

import numpy as np

from cluster.config_builder import SAMPLER_WEIGHTINGS
from workers.corpus import MIN_ANCHOR_UTTERANCES, CorpusError, SpeakerDatabase

log = logging.getLogger(__name__)

WEIGHTINGS = SAMPLER_WEIGHTINGS  # the config's choices (cluster.config_builder)


class TripletSampler:
    def __init__(
        self,
        db: SpeakerDatabase,
        speakers: list[str] | None = None,
        triplets: int = 32,
        seed: int = 0,
        weighting: str = "speaker",
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {weighting!r}: one of {', '.join(WEIGHTINGS)}")
        self.db = db
        self.triplets = triplets
        self.weighting = weighting
        names = speakers if speakers is not None else db.speakers
        self.pool: dict[str, list[int]] = {
            s: list(db.by_speaker[s]) for s in names if db.by_speaker.get(s)
        }
        # The stream's generator. The batch stage draws its crops and augmentation from it
        # too, so the state each batch carries (``state()``) resumes both.
        self.rng = np.random.default_rng(seed)
        self._order: list[str] = []
        self.discarded: dict[int, str] = {}
        self._weighted: tuple[list[str], np.ndarray] | None = None
        self._check()

    def _check(self) -> None:
        if len(self.pool) < 2 or not self.anchors():
            raise CorpusError(
                f"cannot sample triplets: {len(self.pool)} speaker(s) with usable audio and "
                f"{len(self.anchors())} with {MIN_ANCHOR_UTTERANCES} or more utterances "
                "(need 2 and 1)"
            )

    def anchors(self) -> list[str]:
        return sorted(s for s, utts in self.pool.items() if len(utts) >= MIN_ANCHOR_UTTERANCES)

    def discard(self, index: int, reason: str = "unusable") -> None:
        """Never draw utterance ``index`` again."""
        speaker = self.db.utterances[index].speaker
        utts = self.pool.get(speaker)
        if utts and index in utts:
            utts.remove(index)
            if not utts:
                del self.pool[speaker]
            self.discarded[index] = reason
            self._weighted = None
            self._order = [
                s for s in self._order if len(self.pool.get(s, ())) >= MIN_ANCHOR_UTTERANCES
            ]
        self._check()

    def _weights(self) -> tuple[list[str], np.ndarray]:
        """The anchor speakers and their probabilities (``weighting``), kept until a discard."""
        if self._weighted is None:
            anchors = self.anchors()
            w = np.array([len(self.pool[a]) for a in anchors], dtype=np.float64)
            w = np.sqrt(w) if self.weighting == "sqrt" else w
            self._weighted = (anchors, w / w.sum())
        return self._weighted

    def _next_anchor(self) -> str:
        if self.weighting != "speaker":
            anchors, p = self._weights()
            return anchors[int(self.rng.choice(len(anchors), p=p))]
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

    @property
    def n_speakers(self) -> int:
        """Speakers of the corpus (labels are their indices; speed copies count past it)."""
        return len(self.db.speakers)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": list(self._order)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._order = [s for s in state["order"] if s in self.pool]
