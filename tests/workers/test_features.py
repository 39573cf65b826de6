"""Our log-mel front end against librosa, the reference implementation of the field."""

import librosa
import numpy as np
import pytest

from cluster.config import FeatureConfig
from workers.audio import load_audio
from workers.features import LogMel, fit_frames, librosa_logmel, mel_filterbank

# Stated tolerance: our float32 pipeline agrees with librosa's (float32 STFT) to within
# 0.01 dB on log-mel energies above -80 dB.
TOL_DB = 0.01


def test_filterbank_matches_librosa():
    cfg = FeatureConfig()
    ours = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    ref = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["libri_103", "fsdd_jackson", "remy_philippe"])
def test_logmel_matches_librosa_on_real_speech(speech_root, name):
    cfg = FeatureConfig()
    y = load_audio(sorted((speech_root / name).glob("*.wav"))[0])
    # librosa frames are n_fft long with the window centred: our frame t starts
    # (n_fft - win) / 2 samples later, so compare on the shifted signal.
    off = (cfg.n_fft - cfg.win_length) // 2
    ours = LogMel(cfg)(y[off:])
    ref = librosa_logmel(y, cfg)
    n = min(len(ours), len(ref))
    assert n > 100
    loud = ref[:n] > -80
    assert loud.mean() > 0.5
    np.testing.assert_allclose(ours[:n][loud], ref[:n][loud], atol=TOL_DB)


def test_frames_and_shapes():
    cfg = FeatureConfig()
    lm = LogMel(cfg)
    y = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    out = lm(y)
    assert out.shape == (1 + (16000 - 400) // 160, 64) and out.dtype == np.float32
    with pytest.raises(ValueError, match="shorter than one window"):
        lm(y[:100])


def test_fit_frames_crops_and_tiles():
    x = np.arange(10)[:, None] * np.ones((1, 4))
    np.testing.assert_array_equal(fit_frames(x, 4, 3)[:, 0], [3, 4, 5, 6])
    tiled = fit_frames(x[:3], 8, 0)[:, 0]
    np.testing.assert_array_equal(tiled, [0, 1, 2, 0, 1, 2, 0, 1])
