"""Augmentation on the producers: each training segment is a fresh acoustic condition.

A producer with ``augment.enabled`` crops a segment of the utterance's cached
speech waveform (int16, VAD-trimmed: :class:`~workers.extract.SpeechExtractor`), passes it through the
stages below, each with its own probability and range, and computes the log-mel
of the result. Every random choice comes from the sampler's generator, whose state
travels in each batch, so a run is reproducible and ``--resume`` continues the same
stream.

- **speed** 0.9 / 1.1 (soxr resampling, pitch and tempo together): a perturbed copy
  is a new speaker (``label + k * n_speakers``), as in WeSpeaker and Kaldi recipes;
- **reverberation**: convolution (``scipy.signal.oaconvolve``) with a room impulse
  response from ``augment.rir_dir`` (the RIRS_NOISES layout, or any folder of
  impulse responses), else from rooms simulated once per run with pyroomacoustics
  (image-source method) into the cache;
- **additive noise** at a random SNR: a file from ``augment.noise_dir`` (MUSAN's
  ``noise/ music/ speech/``, or any folder of audio), else babble of other training
  speakers or coloured noise, so augmentation works out of the box;
- **channel**: a random microphone and line, band-pass (60-300 Hz to 3.4-7.6 kHz: from
  telephone band to nearly full band) and a spectral tilt, so the two views of a pair
  never share a channel;
- **gain**: a random level change;
- **SpecAugment** time and frequency masks on the log-mel (set to the segment's mean,
  which the model's per-segment normalisation maps to zero).

    aug = Augmenter(cfg.augment, cfg.features, noise_pool=..., cache_dir=...)
    y = aug.waveform(x, rng)            # float32 speech -> augmented float32
    feats = aug.spec_mask(logmel(y), rng)
"""

from __future__ import annotations

import hashlib
import json
import logging
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


def speed_perturb(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch moves with it): ``len / factor`` samples."""
    if factor == 1.0:
        return x
    # Read as if recorded at sr * factor, resampled back to sr.
    return soxr.resample(x, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x + a * noise`` with ``a`` set so that power(x) / power(a * noise) is ``snr_db``."""
    noise = np.resize(noise, len(x)).astype(np.float32)  # tiled when shorter
    px, pn = float(np.mean(x * x)), float(np.mean(noise * noise))
    if pn <= 0 or px <= 0:
        return x
    return (x + noise * np.sqrt(px / (pn * 10 ** (snr_db / 10)))).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response aligned on its direct path (its peak), keeping
    the length and the level of ``x``."""
    rir = np.asarray(rir, np.float32)
    peak = int(np.argmax(np.abs(rir)))
    rir = rir[peak:] / (np.abs(rir[peak]) + 1e-9)
    y = scipy.signal.oaconvolve(x, rir)[: len(x)]
    scale = np.sqrt(np.mean(x * x) / (np.mean(y * y) + 1e-12))
    return (y * scale).astype(np.float32)


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


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise (spectral slope 0, -1 or -2), unit power."""
    slope = rng.choice([0.0, -1.0, -2.0])
    m = scipy.fft.next_fast_len(n, real=True)  # a length with small factors: 10x faster
    spectrum = scipy.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    y = scipy.fft.irfft(spectrum * f ** (slope / 2), m)[:n]
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


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
        return coloured_noise(n, rng)

    def waveform(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Reverberation, noise, channel and gain, each with its probability."""
        c = self.cfg
        if c.reverb_prob and rng.random() < c.reverb_prob:
            if self.rir_folder is not None:
                rir = self.rir_folder.get(int(rng.integers(len(self.rir_folder))))
            else:
                rir = self.rirs[int(rng.integers(len(self.rirs)))]
            if rir is not None:
                x = reverberate(x, rir)
        if c.noise_prob and rng.random() < c.noise_prob:
            x = add_noise(x, self._noise(len(x), rng), float(rng.uniform(c.snr_low, c.snr_high)))
        if c.channel_prob and rng.random() < c.channel_prob:
            x = random_channel(x, rng, self.sr)
        if c.gain_db and rng.random() < 0.5:
            x = x * np.float32(10 ** (rng.uniform(-c.gain_db, c.gain_db) / 20))
        return x.astype(np.float32)

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
