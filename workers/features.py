"""Log-mel filterbank features, fast: float32 real FFT over strided frames.

Stages, each pure:

- ``LogMel(cfg)(signal)``: float32 mono at ``cfg.sample_rate`` -> ``[frames, n_mels]``
  float32 log-mel energies in dB (``10 log10``), not normalised. Frame ``t``
  covers samples ``[t*hop, t*hop + win)``; no centre padding, so a crop of the
  signal and a crop of the frames agree.
- ``fit_frames(features, frames, start)``: a crop of ``frames`` frames (tiled when short).

Per-segment normalisation is the model's first layer (``learner/model.py``), not a stage here.

    logmel = LogMel(FeatureConfig())        # window and filterbank built once
    feats = logmel(signal)                  # [frames, 64] float32 dB
    crop = fit_frames(feats, 160, 0)        # the first 160 frames (tiled when shorter)

Why it is fast: frames are a strided *view* (no copy until the window is
applied), the FFT runs in single precision (``scipy.fft.rfft`` keeps float32),
and the mel projection is one float32 matrix product. The power spectrum equals
librosa's (the window sits at another offset inside the 512-point frame, which
changes only phase); the filterbank reproduces ``librosa.filters.mel`` (Slaney
scale and norm) without importing librosa.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.sparse

from cluster.config import FeatureConfig

_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0
AMIN = 1e-10  # power floor before the log, as in librosa.power_to_db


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel = np.where(
        log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-9) / _MIN_LOG_HZ) / _LOGSTEP, mel
    )
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` triangular filters, Slaney-normalised."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def frame_count(n_samples: int, win: int, hop: int) -> int:
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


class LogMel:
    """Callable log-mel extractor for one :class:`FeatureConfig` (holds the window and filters)."""

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        self.cfg = cfg or FeatureConfig()
        c = self.cfg
        self.win, self.hop, self.n_fft = c.win_length, c.hop_length, c.n_fft
        if self.win > self.n_fft:
            raise ValueError(f"window ({self.win} samples) is longer than the FFT ({self.n_fft})")
        n = np.arange(self.win)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / self.win)).astype(np.float32)  # periodic
        fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax).astype(np.float32)
        self.mel = fb  # [n_mels, bins]
        # Each FFT bin feeds at most two triangles: a sparse product is ~2x a dense one.
        self._mel_sparse = scipy.sparse.csr_matrix(fb)
        self.bin_freqs = np.linspace(0, c.sample_rate / 2, 1 + self.n_fft // 2)  # Hz
        self._buf = np.zeros((0, self.n_fft), dtype=np.float32)

    def frames(self, signal: np.ndarray) -> np.ndarray:
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        n = frame_count(len(signal), self.win, self.hop)
        if n == 0:
            raise ValueError(f"signal of {len(signal)} samples is shorter than one window")
        step = signal.strides[0]
        return np.lib.stride_tricks.as_strided(
            signal, shape=(n, self.win), strides=(step * self.hop, step), writeable=False
        )

    def power(self, signal: np.ndarray) -> np.ndarray:
        """``[frames, 1 + n_fft // 2]`` float32 power spectrum."""
        frames = self.frames(signal)
        # Zero-padding into a buffer we own is ~4x faster than rfft(n=n_fft) padding itself.
        # The buffer is reused (its padding stays zero), which spares page faults on every
        # call; so one LogMel must not be shared between threads.
        if len(self._buf) < len(frames):
            self._buf = np.zeros((len(frames), self.n_fft), dtype=np.float32)
        padded = self._buf[: len(frames)]
        np.multiply(frames, self.window, out=padded[:, : self.win])
        spec = scipy.fft.rfft(padded, axis=1, workers=1)  # complex64
        power = np.abs(spec)
        power *= power
        return power

    def __call__(self, signal: np.ndarray, gain=None) -> np.ndarray:
        """``gain``: a power gain per FFT bin (or one number) applied before the mel
        filterbank: a linear filter's power response (the augmentation's channel)."""
        power = self.power(signal)
        if gain is not None:
            power *= gain
        mel = np.ascontiguousarray((self._mel_sparse @ power.T).T)
        np.maximum(mel, AMIN, out=mel)
        np.log10(mel, out=mel)
        mel *= 10.0
        return mel


def fit_frames(features: np.ndarray, frames: int, start: int) -> np.ndarray:
    """Crop ``frames`` frames from ``start``; a shorter utterance is tiled (wrapped) to length."""
    n = len(features)
    if n >= frames:
        return features[start : start + frames]
    reps = -(-frames // n)
    return np.concatenate([features] * reps, axis=0)[:frames]


def librosa_logmel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The same features computed by librosa, the field's reference: ``[frames, n_mels]`` dB.

    Not used in training; the tests check ``LogMel`` against it and ``bench/features.py``
    times both on the same segments.
    """
    import librosa

    s = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        center=False,
        power=2.0,
    )
    return librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=None).T
