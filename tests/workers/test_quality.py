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
    # every file of the fixture, libri_1034's calm, clean seg1 too (dynamics 2.4 dB at 28 dB
    # SNR: it was refused as "steady noise, a tone or music")
    files = sorted(SPEECH.glob("*/*.flac"))
    speech = [measure(load_audio(f)) for f in files]
    assert len(speech) >= 20
    for f, q in zip(files, speech, strict=True):
        assert limits.problems(q) == [], (f.name, q)
        assert q.snr_db > 1.5 and q.clipping == 0
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


def test_the_dynamics_minimum_is_lower_only_for_a_clean_input():
    """Steady noise is never clean (the shared noise recordings: at most 10 dB SNR, up to
    2.67 dB dynamics), so 2.5 dB of dynamics is refused at 8 dB SNR and accepted at 28."""
    from workers.quality import Quality

    limits = QualityLimits()
    noisy, clean = Quality(3.0, 8.0, 0.0, 2.5), Quality(3.0, 28.0, 0.0, 2.5)
    assert limits.dynamics_needed(noisy) == 2.8 and limits.problems(noisy)
    assert limits.dynamics_needed(clean) == pytest.approx(2.296) and not limits.problems(clean)
    assert "minimum 2.8 dB at 8 dB SNR" in limits.problems(noisy)[0]
    assert QualityLimits(min_dynamics_db=0).problems(Quality(3.0, 8.0, 0.0, 0.1)) == []


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
