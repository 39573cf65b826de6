"""The batch stage (workers.batches.BatchBuilder): crops of cached features into a Batch."""

import numpy as np

from cluster.config import FeatureConfig
from tests.fakes import write_wav
from workers.batches import BatchBuilder
from workers.cache import CachedSource
from workers.corpus import SpeakerDatabase
from workers.extract import LogMelExtractor
from workers.sampler import TripletSampler


def test_short_utterances_are_tiled_not_dropped(tmp_path):
    for s in range(2):
        for u in range(2):
            write_wav(tmp_path / f"s{s}" / f"{u}.wav", 0.6)
    db = SpeakerDatabase.scan(tmp_path)
    source = CachedSource(db, LogMelExtractor(FeatureConfig()))
    builder = BatchBuilder(TripletSampler(db, triplets=2), source, 200, FeatureConfig())
    batch = builder.build().validate(triplets=2, frames=200, n_mels=64)
    assert batch.features.dtype == np.float16
    assert source.get(0).shape[0] < 200


def test_a_batch_is_anchors_positives_negatives_of_the_sampled_speakers(tmp_path):
    for s in range(3):
        for u in range(3):
            write_wav(tmp_path / f"s{s}" / f"{u}.wav", 1.2, f0=110 + 50 * s)
    db = SpeakerDatabase.scan(tmp_path)
    source = CachedSource(db, LogMelExtractor(FeatureConfig()))
    builder = BatchBuilder(TripletSampler(db, triplets=4, seed=3), source, 50, FeatureConfig())
    batch = builder.build().validate(triplets=4, frames=50, n_mels=64)
    a, p, n = np.split(batch.speakers, 3)
    assert (a == p).all() and (a != n).all()  # the layout the learner's loss relies on
    assert batch.spec == FeatureConfig().fingerprint()
