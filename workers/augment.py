"""Augmentation on the producers: each training segment is a fresh acoustic condition.

A producer with ``augment.enabled`` crops a segment of the utterance's cached
speech waveform (int16, VAD-trimmed: :class:`~workers.extract.SpeechExtractor`), passes it through the
stages below, each with its own probability and range, and computes the log-mel
of the result. Every random choice comes from the sampler's generator, whose state
travels in each batch, so a run is reproducible and ``--resume`` continues the same
stream.

- **speed** 0.9 / 1.1 (soxr resampling, pitch and tempo together): a perturbed copy
  is a new speaker (``label + k * n_speakers``), as in WeSpeaker and Kaldi recipes;
- **reverberation**: convolution (one FFT product with the room's spectrum, kept per
  room) with a room impulse response from ``augment.rir_dir`` (the RIRS_NOISES layout,
  or any folder of impulse responses), else from rooms simulated once per run with
  pyroomacoustics (image-source method) into the cache;
- **additive noise** at a random SNR: a file from ``augment.noise_dir`` (MUSAN's
  ``noise/ music/ speech/``, or any folder of audio), else babble of other training
  speakers or coloured noise (cropped from a bank made once per producer), so
  augmentation works out of the box;
- **channel**: a random microphone and line, band-pass (60-300 Hz to 3.4-7.6 kHz: from
  telephone band to nearly full band) and a spectral tilt, so the two views of a pair
  never share a channel;
- **gain**: a random level change;

The channel and the gain are linear and time-invariant, so :meth:`Augmenter.features`
applies them where they cost nothing: as the filter's exact power response, multiplied
into each frame's power spectrum before the mel filterbank (``bench/augment.py``
measures the chain; ``tests/workers/test_augment.py`` compares its conditions with the
time-domain reference).
- **SpecAugment** time and frequency masks on the log-mel (set to the segment's mean,
  which the model's per-segment normalisation maps to zero).

    aug = Augmenter(cfg.augment, cfg.features, babble=..., cache_dir=...)
    feats = aug.features(x, rng, logmel)     # float32 speech -> augmented log-mel
    feats = aug.spec_mask(feats, rng)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.signal
import soxr

from cluster.config import AugmentConfig, FeatureConfig
from workers.audio import AUDIO_EXTENSIONS, AudioError, load_audio
from workers.cache_root import default_cache_root
from workers.layouts import walk

log = logging.getLogger(__name__)

SPEEDS = (1.0, 0.9, 1.1)  # index 0 keeps the speaker; 1 and 2 make new ones
# Config overrides: augmentation on with every stage off, for switching one stage on.
EVERY_STAGE_OFF = (
    "augment.enabled=true",
    "augment.reverb_prob=0",
    "augment.noise_prob=0",
    "augment.gain_db=0",
    "augment.time_masks=0",
    "augment.freq_masks=0",
)


def speed_perturb(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch moves with it): ``len / factor`` samples."""
    if factor == 1.0:
        return x
    # Read as if recorded at sr * factor, resampled back to sr.
    y = soxr.resample(np.asarray(x, np.float32), sample_rate * factor, sample_rate, quality="HQ")
    return y if y.dtype == np.float32 else y.astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x + a * noise`` with ``a`` set so that power(x) / power(a * noise) is ``snr_db``."""
    if len(noise) != len(x):
        noise = np.resize(noise, len(x))  # tiled when shorter
    noise = np.asarray(noise, np.float32)
    px, pn = float(np.dot(x, x)) / len(x), float(np.dot(noise, noise)) / len(x)
    if pn <= 0 or px <= 0:
        return x
    scale = np.float32(np.sqrt(px / (pn * 10 ** (snr_db / 10))))
    return (x + noise * scale).astype(np.float32, copy=False)


def aligned_rir(rir: np.ndarray) -> np.ndarray:
    """An impulse response from its direct path (its peak) on, the peak at 1."""
    rir = np.asarray(rir, np.float32)
    peak = int(np.argmax(np.abs(rir)))
    return rir[peak:] / (np.abs(rir[peak]) + 1e-9)


def rir_spectrum(rir: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """``(spectrum, fft length)`` of the aligned ``rir`` for convolving ``n`` samples: a
    length with small factors that holds the whole linear convolution (no wrap-around)."""
    h = aligned_rir(rir)
    size = scipy.fft.next_fast_len(n + len(h) - 1, real=True)
    return scipy.fft.rfft(h, size), size


def reverberate(x: np.ndarray, rir: np.ndarray, spectrum=None) -> np.ndarray:
    """Convolve with a room impulse response aligned on its direct path (its peak), keeping
    the length and the level of ``x``. ``spectrum``: the room's :func:`rir_spectrum` for
    ``len(x)``, when kept from an earlier call (one FFT pair per segment then)."""
    spec, size = spectrum if spectrum is not None else rir_spectrum(rir, len(x))
    x = np.asarray(x, np.float32)
    spectrum_x = scipy.fft.rfft(x, size, workers=1)
    spectrum_x *= spec
    y = scipy.fft.irfft(spectrum_x, size, workers=1)[: len(x)]
    scale = np.float32(np.sqrt(float(np.dot(x, x)) / (float(np.dot(y, y)) + 1e-12)))
    return (y * scale).astype(np.float32, copy=False)


CHANNEL_HIGHPASS = (60.0, 300.0)  # Hz: the band-pass's lower edge is drawn from this range
CHANNEL_LOWPASS = (3400.0, 7600.0)  # and its upper edge (capped below Nyquist)


def random_channel(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """``x`` through a random microphone and line: a 4th-order Butterworth band-pass with
    edges drawn from ``CHANNEL_HIGHPASS`` and ``CHANNEL_LOWPASS``, then a first-order
    spectral tilt (pre-emphasis or de-emphasis). Also the synthetic corpus's channel."""
    high = rng.uniform(*CHANNEL_HIGHPASS)
    low = rng.uniform(CHANNEL_LOWPASS[0], min(CHANNEL_LOWPASS[1], 0.475 * sample_rate))
    sos = scipy.signal.butter(4, [high, low], "bandpass", fs=sample_rate, output="sos")
    y = scipy.signal.sosfilt(sos, x)
    tilt = rng.uniform(-0.6, 0.6)
    return scipy.signal.lfilter([1.0, -tilt * 0.5], [1.0], y)


def bandpass_power(freqs: np.ndarray, high: float, low: float, sample_rate: int) -> np.ndarray:
    """``|H(f)|^2`` of ``scipy.signal.butter(4, [high, low], "bandpass", fs=sample_rate)``
    at ``freqs`` (Hz), in closed form: the analog Butterworth band-pass at the bilinear
    transform's pre-warped frequencies (equal to ``sosfreqz`` within 1e-10 dB)."""
    f = np.minimum(np.asarray(freqs, np.float64), 0.5 * sample_rate * (1 - 1e-9))
    w = 2 * sample_rate * np.tan(np.pi * f / sample_rate)
    w1, w2 = (2 * sample_rate * np.tan(np.pi * e / sample_rate) for e in (high, low))
    with np.errstate(divide="ignore"):
        omega = (w * w - w1 * w2) / (w * (w2 - w1))
    gain = 1.0 / (1.0 + omega**8)  # order 4: |H|^2 = 1 / (1 + omega^(2*4))
    return np.where(w > 0, gain, 0.0)


def tilt_power(freqs: np.ndarray, tilt: float, sample_rate: int) -> np.ndarray:
    """``|H(f)|^2`` of the first-order tilt ``1 - (tilt / 2) z^-1`` at ``freqs`` (Hz)."""
    a = 0.5 * tilt
    return 1.0 + a * a - 2.0 * a * np.cos(2 * np.pi * np.asarray(freqs) / sample_rate)


def channel_gain(rng: np.random.Generator, freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """:func:`random_channel`'s filter as a power gain at ``freqs``: the same draws in the same
    order (high-pass edge, low-pass edge, tilt), for multiplying into a power spectrum."""
    high = rng.uniform(*CHANNEL_HIGHPASS)
    low = rng.uniform(CHANNEL_LOWPASS[0], min(CHANNEL_LOWPASS[1], 0.475 * sample_rate))
    tilt = rng.uniform(-0.6, 0.6)
    gain = bandpass_power(freqs, high, low, sample_rate) * tilt_power(freqs, tilt, sample_rate)
    return gain.astype(np.float32)


ROOM_SPECTRA = 128  # room spectra kept per producer (about 0.3 MB each for 4 s segments)
BANK_PERIODS = 8  # noise periods of each colour, made once per producer and segment length
COLOUR_SLOPES = (0.0, -1.0, -2.0)  # white, pink, brown


def colour_bank(slope: float, n: int, periods: int, seed: int) -> np.ndarray:
    """``[periods, 2 m]``: periods of :func:`coloured_noise`'s signal for segments of ``n``
    samples (``m`` of them, periodic by construction), each stored twice in a row, so any
    ``n`` samples from any offset are a circular shift of one: the distribution of
    :func:`coloured_noise` itself (a stationary periodic process), at the cost of a copy."""
    rng = np.random.default_rng([seed, int(-slope)])
    rows = [_coloured_period(n, slope, rng) for _ in range(periods)]
    return np.stack([np.concatenate([r, r]) for r in rows])


def _coloured_period(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """One period (``next_fast_len(n)`` samples) of unit-power noise of spectral ``slope``."""
    m = scipy.fft.next_fast_len(n, real=True)  # a length with small factors: 10x faster
    spectrum = scipy.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    y = scipy.fft.irfft(spectrum * f ** (slope / 2), m)
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise (spectral slope 0, -1 or -2), unit power, made fresh
    (the augmenter crops it from a :func:`colour_bank` instead)."""
    slope = COLOUR_SLOPES[int(rng.integers(len(COLOUR_SLOPES)))]
    return _coloured_period(n, slope, rng)[:n]


def simulated_rirs(
    count: int, sample_rate: int, seed: int, cache_dir: str = ""
) -> list[np.ndarray]:
    """``count`` impulse responses of random shoebox rooms (pyroomacoustics' image-source
    method), made once and kept in the cache."""
    spec = {"count": count, "sample_rate": sample_rate, "seed": seed, "version": 1}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = default_cache_root(cache_dir) / "rirs" / f"simulated-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return [data[k] for k in sorted(data.files)]
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    for _ in range(count):
        dims = rng.uniform([3.0, 3.0, 2.4], [12.0, 10.0, 4.0])
        rt60 = float(rng.uniform(0.2, 0.9))
        absorption, order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(
            dims, fs=sample_rate, materials=pra.Material(absorption), max_order=min(order, 17)
        )
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rirs.append(np.asarray(room.rir[0][0], np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"{i:05d}": r for i, r in enumerate(rirs)})
    tmp.replace(path)
    return rirs


class AudioFolder:
    """The audio files below a folder (noise or impulse responses), decoded on first use
    and kept (each file is short, the folder is read lazily)."""

    def __init__(self, root: str, sample_rate: int, what: str) -> None:
        base = Path(root).expanduser()
        self.files = [base / rel for rel, _ in walk(base) if rel.lower().endswith(AUDIO_EXTENSIONS)]
        if not self.files:
            raise AudioError(base, f"no audio files for {what} under {base}")
        self.sample_rate = sample_rate
        self._loaded: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def get(self, i: int) -> np.ndarray | None:
        if i not in self._loaded:
            try:
                self._loaded[i] = load_audio(self.files[i], self.sample_rate)
            except AudioError as exc:
                log.warning("augmentation skips %s", exc)
                self._loaded[i] = None
        return self._loaded[i]


class Augmenter:
    """The waveform stages and the spectrogram masks for one run's ``augment`` config.

    ``babble`` is a callable giving the speech (float32) of a random other training
    utterance, for babble noise when no noise folder is given.
    """

    def __init__(
        self, cfg: AugmentConfig, features: FeatureConfig, babble=None, cache_dir: str = ""
    ) -> None:
        self.cfg, self.sr = cfg, features.sample_rate
        self.noise = AudioFolder(cfg.noise_dir, self.sr, "noise") if cfg.noise_dir else None
        self.rir_folder = AudioFolder(cfg.rir_dir, self.sr, "rirs") if cfg.rir_dir else None
        self.rirs = (
            []
            if cfg.rir_dir or not cfg.reverb_prob
            else simulated_rirs(cfg.simulated_rooms, self.sr, cfg.seed, cache_dir)
        )
        self.babble = babble
        self._banks: dict[tuple[float, int], np.ndarray] = {}  # (slope, n) -> noise bank
        # (source, room, n) -> spectrum, the most recent ROOM_SPECTRA (RIRS_NOISES has 60,000)
        self._rooms: OrderedDict[tuple[str, int, int], tuple] = OrderedDict()
        self._freqs: dict[int, np.ndarray] = {}  # FFT size -> bin frequencies

    def describe(self) -> dict:
        return {
            **asdict(self.cfg),
            "noise_files": len(self.noise) if self.noise else 0,
            "rir_files": len(self.rir_folder) if self.rir_folder else len(self.rirs),
        }

    def speed_index(self, rng: np.random.Generator) -> int:
        """0 (no change), 1 (0.9) or 2 (1.1), for a triplet's anchor and positive together."""
        if self.cfg.speed_prob and rng.random() < self.cfg.speed_prob:
            return int(rng.integers(1, 3))
        return 0

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.noise is not None and (
            self.cfg.noise_dir_share >= 1 or rng.random() < self.cfg.noise_dir_share
        ):
            clip = self.noise.get(int(rng.integers(len(self.noise))))
            if clip is not None and len(clip) > n:
                start = int(rng.integers(len(clip) - n + 1))
                return clip[start : start + n]
            if clip is not None:
                return clip
        if self.babble is not None and rng.random() < 0.5:
            voices = [self.babble(rng) for _ in range(int(rng.integers(1, 4)))]
            voices = [v for v in voices if v is not None and len(v)]
            if voices:
                mix = np.zeros(n, np.float32)
                for v in voices:
                    mix += np.resize(v, n) / (np.std(v) + 1e-9)
                return mix
        return self._coloured(n, rng)

    def _coloured(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A crop of white, pink or brown noise from the bank (made on first use)."""
        slope = COLOUR_SLOPES[int(rng.integers(len(COLOUR_SLOPES)))]
        bank = self._banks.get((slope, n))
        if bank is None:
            bank = colour_bank(slope, n, BANK_PERIODS, self.cfg.seed)
            self._banks[(slope, n)] = bank
        row = bank[int(rng.integers(len(bank)))]
        start = int(rng.integers(len(row) // 2))
        return row[start : start + n]

    def _reverberated(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random room's reverberation, its spectrum kept per room and segment length."""
        if self.rir_folder is not None:
            source, room = "folder", int(rng.integers(len(self.rir_folder)))
            rir = self.rir_folder.get(room)
        else:
            source, room = "simulated", int(rng.integers(len(self.rirs)))
            rir = self.rirs[room]
        if rir is None:
            return x
        key = (source, room, len(x))
        spectrum = self._rooms.get(key)
        if spectrum is None:
            spectrum = self._rooms[key] = rir_spectrum(rir, len(x))
            while len(self._rooms) > ROOM_SPECTRA:
                self._rooms.popitem(last=False)
        else:
            self._rooms.move_to_end(key)
        return reverberate(x, rir, spectrum)

    def features(self, x: np.ndarray, rng: np.random.Generator, logmel) -> np.ndarray:
        """The log-mel (``logmel``: a :class:`~workers.features.LogMel`) of ``x`` through
        reverberation, noise, channel and gain, each with its probability. The channel and
        the gain are multiplied into the power spectrum (exactly their power response)."""
        c = self.cfg
        if c.reverb_prob and rng.random() < c.reverb_prob:
            x = self._reverberated(x, rng)
        if c.noise_prob and rng.random() < c.noise_prob:
            x = add_noise(x, self._noise(len(x), rng), float(rng.uniform(c.snr_low, c.snr_high)))
        gain = None
        if c.channel_prob and rng.random() < c.channel_prob:
            gain = channel_gain(rng, logmel.bin_freqs, self.sr)
        if c.gain_db and rng.random() < 0.5:
            level = np.float32(10 ** (rng.uniform(-c.gain_db, c.gain_db) / 10))  # power
            gain = level if gain is None else gain * level
        return logmel(np.asarray(x, np.float32), gain)

    def spec_mask(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """SpecAugment: ``time_masks`` spans of up to ``time_width`` frames and
        ``freq_masks`` bands of up to ``freq_width`` mel bins set to the segment's mean."""
        c = self.cfg
        if not (c.time_masks or c.freq_masks):
            return feats
        out = np.array(feats, copy=True)
        fill = out.mean()
        t, m = out.shape
        for _ in range(c.time_masks):
            w = int(rng.integers(0, c.time_width + 1))
            s = int(rng.integers(0, max(1, t - w)))
            out[s : s + w] = fill
        for _ in range(c.freq_masks):
            w = int(rng.integers(0, c.freq_width + 1))
            s = int(rng.integers(0, max(1, m - w)))
            out[:, s : s + w] = fill
        return out
