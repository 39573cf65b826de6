"""Input quality (workers.quality): real speech passes the default limits; noise, tones and
clipped audio are measured as such and refused with the measure named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.audio import load_audio
from workers.quality import NotSpeech, QualityLimits, QualityMeter

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"


def measure(x: np.ndarray, sr: int = 16000):
    meter = QualityMeter(sr)
    meter.add(x.astype(np.float32))
    return meter.result(len(x) / sr)


def test_real_speech_passes_and_steady_sounds_do_not():
    limits = QualityLimits()
    speech = [measure(load_audio(f)) for f in sorted(SPEECH.glob("libri_10[48]*/*.flac"))]
    assert len(speech) >= 4
    for q in speech:
        assert limits.problems(q) == [], q
        assert q.dynamics_db > 2.8 and q.snr_db > 1.5 and q.clipping == 0
    t = np.arange(3 * 16000) / 16000
    tone = measure(0.3 * np.sin(2 * np.pi * 440 * t))
    assert tone.snr_db < 1.5 and tone.dynamics_db < 1.0
    with pytest.raises(NotSpeech, match=r"SNR about 0.0 dB \(minimum 1.5 dB\)"):
        limits.check(tone, "tone.wav")
    rng = np.random.default_rng(0)
    hum = rng.standard_normal(len(t)) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))  # modulated noise
    q = measure(0.1 * hum)
    assert q.dynamics_db < 2.8
    with pytest.raises(NotSpeech, match="spectral dynamics"):
        limits.check(q, "hum.wav")
    assert limits.score(q) < 1 < min(limits.score(s) for s in speech)


def test_clipping_and_speech_seconds_are_measured():
    x = load_audio(sorted(SPEECH.glob("libri_1081/*.flac"))[0])
    clipped = np.clip(8 * x, -1, 1)
    q = measure(clipped)
    assert (
        q.clipping == pytest.approx(np.mean(np.abs(clipped) >= 0.999), abs=1e-6)
        and q.clipping > 0.2
    )
    with pytest.raises(NotSpeech, match="clipped"):
        QualityLimits().check(q, "loud.wav")
    short = QualityMeter().result(0.3)
    assert "no speech detected (only 0.30 s" in QualityLimits().problems(short)[0]
    # A limit set to 0 turns its check off.
    assert QualityLimits(min_snr_db=0, min_dynamics_db=0).problems(measure(np.zeros(16000))) == []
