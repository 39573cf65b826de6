"""Extraction (workers.extract): one decoding path, two extractors, what their output
depends on."""

import numpy as np

from cluster.config import FeatureConfig
from tests.fakes import write_wav
from workers.extract import LogMelExtractor, SpeechExtractor
from workers.features import LogMel


def test_both_extractors_decode_the_same_speech(tmp_path):
    write_wav(tmp_path / "a.wav", 1.5, f0=140)
    cfg = FeatureConfig()
    speech = SpeechExtractor(cfg)(tmp_path / "a.wav", 1.5)
    feats = LogMelExtractor(cfg)(tmp_path / "a.wav", 1.5)
    assert speech.dtype == np.int16 and feats.shape[1] == cfg.n_mels
    # The log-mel extractor's features are the log-mel of the speech extractor's speech.
    again = LogMel(cfg)(speech.astype(np.float32) / 32768).astype(np.float32)
    np.testing.assert_allclose(feats.astype(np.float32), again, atol=0.05)


def test_the_spec_changes_with_what_the_output_depends_on():
    base, other = FeatureConfig(), FeatureConfig(n_mels=40)
    assert LogMelExtractor(base).spec != LogMelExtractor(other).spec
    assert LogMelExtractor(base).kind != SpeechExtractor(base).kind
    assert SpeechExtractor(base).spec == SpeechExtractor(FeatureConfig(n_mels=40)).spec
