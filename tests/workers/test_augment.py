"""Augmentation stages on known signals, the speech cache, and a reproducible stream."""

from __future__ import annotations

import json
import queue

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from cluster.config import AugmentConfig, FeatureConfig, load_config
from tests.fakes import write_wav
from workers.audio import load_audio
from workers.augment import (
    CHANNEL_HIGHPASS,
    CHANNEL_LOWPASS,
    EVERY_STAGE_OFF,
    Augmenter,
    add_noise,
    random_channel,
    reverberate,
    speed_perturb,
)
from workers.features import LogMel
from workers.producer import BatchProducer
from workers.rundata import RunData

SR = 16000


@pytest.fixture(scope="module")
def speech(speech_subset) -> np.ndarray:
    return load_audio(sorted((speech_subset / "libri_103").glob("*.flac"))[0])


@pytest.mark.parametrize("snr", [0.0, 5.0, 17.5])
def test_noise_is_added_at_the_asked_snr(speech, snr):
    noise = np.random.default_rng(1).standard_normal(SR).astype(np.float32)  # tiled to length
    y = add_noise(speech, noise, snr)
    got = 10 * np.log10(np.mean(speech**2) / np.mean((y - speech) ** 2))
    assert abs(got - snr) < 0.5


def test_a_single_delta_impulse_response_leaves_the_signal_unchanged(speech):
    rir = np.zeros(800, np.float32)
    rir[37] = 0.6  # a delay and a level: both undone (aligned on the direct path, level kept)
    np.testing.assert_allclose(reverberate(speech, rir), speech, atol=1e-5)
    room = np.exp(-np.arange(4000) / 800.0) * np.random.default_rng(0).standard_normal(4000)
    wet = reverberate(speech, room.astype(np.float32))
    assert len(wet) == len(speech) and not np.allclose(wet, speech, atol=1e-3)


def test_speed_1_1_shortens_by_1_over_1_1_and_raises_the_pitch():
    t = np.arange(2 * SR) / SR
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    fast = speed_perturb(tone, 1.1, SR)
    assert abs(len(fast) - len(tone) / 1.1) <= 2
    peak = np.argmax(np.abs(np.fft.rfft(fast))) * SR / len(fast)
    assert peak == pytest.approx(220, abs=2)
    assert len(speed_perturb(tone, 0.9, SR)) == pytest.approx(len(tone) / 0.9, abs=2)


def test_spec_masks_cover_at_most_their_widths():
    cfg = AugmentConfig(time_masks=2, time_width=5, freq_masks=1, freq_width=4)
    aug = Augmenter(cfg, FeatureConfig())
    feats = np.arange(100 * 64, dtype=np.float32).reshape(100, 64)
    out = aug.spec_mask(feats, np.random.default_rng(3))
    masked = out == np.float32(feats.mean())
    rows, cols = masked.all(axis=1).sum(), masked.all(axis=0).sum()
    assert rows <= 10 and cols <= 4 and masked.sum() > 0
    assert np.array_equal(out[~masked], feats[~masked])


def test_noise_and_rir_folders_are_used(tmp_path, speech):
    rng = np.random.default_rng(0)
    (tmp_path / "noise" / "noise").mkdir(parents=True)
    sf.write(tmp_path / "noise" / "noise" / "hum.wav", 0.1 * rng.standard_normal(SR), SR)
    (tmp_path / "rirs" / "smallroom").mkdir(parents=True)
    rir = np.exp(-np.arange(3000) / 500.0) * rng.standard_normal(3000)
    sf.write(tmp_path / "rirs" / "smallroom" / "Room001-00001.wav", rir, SR)
    cfg = AugmentConfig(
        noise_dir=str(tmp_path / "noise"),
        rir_dir=str(tmp_path / "rirs"),
        noise_prob=1.0,
        reverb_prob=1.0,
        snr_low=10,
        snr_high=10,
        gain_db=0,
    )
    aug = Augmenter(cfg, FeatureConfig())
    assert aug.describe()["noise_files"] == 1 and aug.describe()["rir_files"] == 1
    logmel = LogMel(FeatureConfig())
    y = aug.features(speech, np.random.default_rng(1), logmel)
    assert y.shape == logmel(speech).shape and np.isfinite(y).all()
    assert not np.allclose(y, logmel(speech))


def test_simulated_rooms_are_made_once_and_reused(tmp_path):
    from workers.augment import simulated_rirs

    first = simulated_rirs(3, SR, seed=7, cache_dir=str(tmp_path))
    assert len(first) == 3 and all(len(r) > 100 and np.isfinite(r).all() for r in first)
    cached = list((tmp_path / "rirs").glob("simulated-*.npz"))
    assert len(cached) == 1
    again = simulated_rirs(3, SR, seed=7, cache_dir=str(tmp_path))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_speech_cache_and_a_stream_that_resumes_identically(synthetic_root, tmp_path):
    cfg = load_config(
        "smoke",
        [
            "augment.enabled=true",
            "augment.speed_prob=0.5",
            f"data.cache_dir={tmp_path}",
            "sampler.triplets=4",
        ],
    )
    q: queue.Queue = queue.Queue()
    first = BatchProducer.from_config(cfg, 0, q)
    first.run(max_batches=3)
    batches = [q.get() for _ in range(3)]
    waves = list((tmp_path / "waves").rglob("*.npy"))
    assert waves and np.load(waves[0]).dtype == np.int16  # speech cached, int16
    n = len(RunData.open(cfg.data, cfg.synthetic).db.speakers)
    assert batches[0].speakers.max() < 3 * n  # speed copies are labelled as other speakers
    assert any((b.speakers >= n).any() for b in batches)

    again = BatchProducer.from_config(cfg, 0, q)
    assert again.source.computed == 0
    again.sampler.set_state(json.loads(batches[0].sampler_state))
    again.run(max_batches=2)
    for want in batches[1:]:
        got = q.get()
        np.testing.assert_array_equal(got.features, want.features)
        np.testing.assert_array_equal(got.speakers, want.speakers)
    # Only cached speech was read: nothing decoded again for the same utterances.
    assert again.source.computed <= first.source.computed


def test_classes_cover_the_speed_copies(synthetic_root):
    cfg = load_config("smoke")
    data = RunData.open(cfg.data, cfg.synthetic)
    n, n_train = len(data.db.speakers), len(data.train)
    table = data.classes(3)
    assert len(table) == 3 * n
    assert sorted(table[table >= 0]) == list(range(3 * n_train))
    s = data.db.speaker_index[sorted(data.train)[0]]
    assert table[s] == 0 and table[s + n] == n_train and table[s + 2 * n] == 2 * n_train


@pytest.mark.parametrize("seed", range(6))
def test_the_channel_removes_energy_above_its_cutoff_and_keeps_the_band(seed):
    x = np.random.default_rng(100).standard_normal(4 * SR)
    twin = np.random.default_rng(seed)  # the same draws as the channel makes: its edges
    high, low = twin.uniform(*CHANNEL_HIGHPASS), twin.uniform(*CHANNEL_LOWPASS)
    y = random_channel(x, np.random.default_rng(seed), SR)
    f, p_in = scipy.signal.welch(x, SR, nperseg=1024)
    _, p_out = scipy.signal.welch(y, SR, nperseg=1024)
    gain_db = 10 * np.log10(p_out / p_in)
    above = f > min(1.3 * low, 7900)
    below = (f > 0) & (f < 0.5 * high)
    inside = (f > 2 * high) & (f < 0.7 * low)
    assert gain_db[above].max() < -15  # above the low-pass edge: gone
    assert gain_db[below].max() < -10  # below the high-pass edge too
    assert np.abs(gain_db[inside]).max() < 4  # the band is kept (a tilt of a few dB)


def _twin_corpus(root, speakers=3):
    """Each speaker: two identical short files (0.3 s, shorter than a smoke segment, so
    both are tiled the same way): anchor and positive differ only by augmentation."""
    rng = np.random.default_rng(0)
    for s in range(speakers):
        path = write_wav(root / f"spk{s}" / "a.wav", 0.3, f0=120.0 + 60 * s, rng=rng)
        (root / f"spk{s}" / "b.wav").write_bytes(path.read_bytes())
    return root


def test_each_view_of_a_pair_gets_its_own_channel_and_resumes_identically(tmp_path):
    corpus = _twin_corpus(tmp_path / "corpus")
    common = [
        f"data.path={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.min_seconds=0.1",
        "data.eval_fraction=0",
        *EVERY_STAGE_OFF,
    ]
    q: queue.Queue = queue.Queue()

    def batches(sets, n=2, state=None):
        producer = BatchProducer.from_config(load_config("smoke", [*common, *sets]), 0, q)
        if state:
            producer.sampler.set_state(state)
        producer.run(max_batches=n)
        return [q.get() for _ in range(n)]

    def views(batch):
        b = len(batch.features) // 3
        return batch.features[:b].astype(np.float32), batch.features[b : 2 * b].astype(np.float32)

    plain = batches(["augment.channel_prob=0"])[0]
    anchors, positives = views(plain)
    np.testing.assert_array_equal(anchors, positives)  # the same audio, the same features

    first = batches(["augment.channel_prob=1"], 3)
    anchors, positives = views(first[0])
    differ = np.abs(anchors - positives).mean(axis=(1, 2))
    assert (differ > 0.1).all()  # every pair: two channels
    # --resume: the sampler state a batch carries continues the same augmented stream.
    again = batches(["augment.channel_prob=1"], 2, json.loads(first[0].sampler_state))
    for want, got in zip(first[1:], again, strict=True):
        np.testing.assert_array_equal(got.features, want.features)


# -- The fast chain against the time-domain reference -------------------------------------
# The reference is the chain as it was before it was made fast (kept here, not in the
# library): fresh coloured noise per segment, overlap-add convolution with the room, the
# channel as a causal IIR filter and the gain on the waveform. The fast chain must give
# segments with the same acoustic conditions on fixed seeds.


def reference_coloured_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """A fresh unit-power segment of ``slope`` (the reference drew the slope from its rng)."""
    m = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    y = scipy.fft.irfft(spectrum * f ** (slope / 2), m)[:n]
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


def reference_reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    rir = np.asarray(rir, np.float32)
    peak = int(np.argmax(np.abs(rir)))
    rir = rir[peak:] / (np.abs(rir[peak]) + 1e-9)
    y = scipy.signal.oaconvolve(x, rir)[: len(x)]
    return (y * np.sqrt(np.mean(x * x) / (np.mean(y * y) + 1e-12))).astype(np.float32)


def mean_spectrum(logmel: LogMel, x: np.ndarray, gain=None) -> np.ndarray:
    """The long-term log-mel spectrum (dB per band) of ``x``."""
    power = logmel.power(x)
    if gain is not None:
        power *= gain
    mel = (logmel._mel_sparse @ power.mean(axis=0)).astype(np.float64)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def test_fast_reverberation_equals_the_overlap_add_reference(speech):
    from workers.augment import rir_spectrum, simulated_rirs

    x = speech[: 4 * SR]
    for rir in simulated_rirs(4, SR, seed=3)[:4]:
        want = reference_reverberate(x, rir)
        np.testing.assert_allclose(reverberate(x, rir), want, atol=2e-5)
        np.testing.assert_allclose(reverberate(x, rir, rir_spectrum(rir, len(x))), want, atol=2e-5)


@pytest.mark.parametrize("slope", [0.0, -1.0, -2.0])
def test_banked_coloured_noise_has_the_reference_spectrum(slope):
    """Crops of the bank against fresh segments: the same spectrum, band by band."""
    from workers.augment import colour_bank

    n, logmel = 4 * SR, LogMel(FeatureConfig())
    bank = colour_bank(slope, n, 8, seed=0)
    rng = np.random.default_rng(0)
    rows, starts = rng.integers(0, len(bank), 40), rng.integers(0, bank.shape[1] // 2, 40)
    crops = [bank[r, s : s + n] for r, s in zip(rows, starts, strict=True)]
    fresh = [reference_coloured_noise(n, slope, np.random.default_rng(k)) for k in range(40)]
    # add_noise scales each crop to the asked SNR by its own power: compare at unit power
    a = np.mean([mean_spectrum(logmel, c / np.std(c)) for c in crops], axis=0)
    b = np.mean([mean_spectrum(logmel, f / np.std(f)) for f in fresh], axis=0)
    assert np.abs(a - b).max() < 1.0, np.round(a - b, 2)


@pytest.mark.parametrize("seed", range(8))
def test_the_channel_in_the_power_spectrum_matches_the_iir_filter(speech, seed):
    """The same draws (edges, tilt) as the time-domain channel: the long-term spectrum of
    speech through either differs by little in every band, so the band edges and the
    tilt the model sees are the reference's."""
    from workers.augment import channel_gain

    logmel = LogMel(FeatureConfig())
    x = speech[: 4 * SR].astype(np.float32)
    want = mean_spectrum(
        logmel, random_channel(x, np.random.default_rng(seed), SR).astype(np.float32)
    )
    got = mean_spectrum(logmel, x, channel_gain(np.random.default_rng(seed), logmel.bin_freqs, SR))
    # The bands above the highest high-pass edge (300 Hz), down to 40 dB below the top: the
    # passband, the low-pass edge and the tilt. Below 300 Hz the mel bands are one or two
    # FFT bins wide and the STFT of a causal IIR's output near its edge differs from its
    # power response (up to 7 dB in the lowest 3 bands, 25 dB or more down): what the
    # model sees there is the edge's depth, not its place.
    band = (want > want.max() - 40) & (mel_centres() > CHANNEL_HIGHPASS[1])
    assert np.abs(got - want)[band].max() < 1.0, np.round(got - want, 2)
    assert np.median(np.abs(got - want)[band]) < 0.2
    # the edges where the response is 10 dB down, and the tilt across the band, agree
    for spec in (want, got):
        spec -= spec[band].max()
    edges = [np.flatnonzero(s > -10)[[0, -1]] for s in (want, got)]
    assert np.abs(edges[0] - edges[1]).max() <= 1
    tilt = [np.polyfit(np.flatnonzero(band), s[band], 1)[0] for s in (want, got)]
    assert abs(tilt[0] - tilt[1]) < 0.01  # dB per band


def mel_centres() -> np.ndarray:
    from workers.features import mel_filterbank

    c = FeatureConfig()
    fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
    freqs = np.linspace(0, c.sample_rate / 2, fb.shape[1])
    return (fb * freqs).sum(axis=1) / fb.sum(axis=1)


def reference_features(aug: Augmenter, x, rng, logmel) -> np.ndarray:
    """The reference chain (time domain) with the fast chain's stages and draws."""
    c = aug.cfg
    if c.reverb_prob and rng.random() < c.reverb_prob:
        x = reference_reverberate(x, aug.rirs[int(rng.integers(len(aug.rirs)))])
    if c.noise_prob and rng.random() < c.noise_prob:  # the tests below turn noise off
        raise AssertionError("compare noise through its own test")
    if c.channel_prob and rng.random() < c.channel_prob:
        x = random_channel(x, rng, SR).astype(np.float32)
    if c.gain_db and rng.random() < 0.5:
        x = x * np.float32(10 ** (rng.uniform(-c.gain_db, c.gain_db) / 20))
    return logmel(np.asarray(x, np.float32))


def test_the_fast_chain_gives_the_references_segments_on_fixed_seeds(speech, tmp_path):
    """Room, channel and gain on 24 seeds: per segment, the long-term spectrum of the fast
    chain's features is the reference's within a fraction of a dB; the frames agree too."""
    cfg = AugmentConfig(
        enabled=True, reverb_prob=0.5, noise_prob=0.0, channel_prob=0.8, gain_db=6.0,
        simulated_rooms=6,
    )  # fmt: skip
    aug = Augmenter(cfg, FeatureConfig(), cache_dir=str(tmp_path))
    logmel = LogMel(FeatureConfig())
    x = speech[: 4 * SR].astype(np.float32)
    diffs = []
    for seed in range(24):
        want = reference_features(aug, x, np.random.default_rng(seed), logmel)
        got = aug.features(x, np.random.default_rng(seed), logmel)
        assert got.shape == want.shape
        above = mel_centres() > CHANNEL_HIGHPASS[1]  # see the channel's test for below
        loud = (want > want.max() - 50) & above  # frames and bands above the floor
        diffs.append(np.median(np.abs(got - want)[loud]))
        assert np.abs(got.mean(axis=0) - want.mean(axis=0))[above].max() < 1.0
    assert np.median(diffs) < 0.5, np.round(diffs, 2)


def test_the_kept_room_spectra_are_bounded(tmp_path, speech, monkeypatch):
    """A folder of many impulse responses (RIRS_NOISES has 60,000) must not keep a spectrum
    for each: the most recent ROOM_SPECTRA only."""
    import workers.augment as A

    monkeypatch.setattr(A, "ROOM_SPECTRA", 4)
    rng = np.random.default_rng(0)
    (tmp_path / "rirs").mkdir()
    for k in range(12):
        rir = np.exp(-np.arange(800) / 100.0) * rng.standard_normal(800)
        sf.write(tmp_path / "rirs" / f"r{k:02d}.wav", rir, SR)
    cfg = AugmentConfig(rir_dir=str(tmp_path / "rirs"), reverb_prob=1.0, noise_prob=0.0)
    aug = Augmenter(cfg, FeatureConfig())
    draws = np.random.default_rng(1)
    for _ in range(40):
        aug._reverberated(speech[:SR], draws)
    assert len(aug._rooms) == 4
