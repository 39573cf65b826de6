"""How usable an input is as speech: seconds of speech, an SNR estimate, clipping, and how
much its spectrum moves (speech changes its spectral shape every few tens of
milliseconds; a boiler, a washing machine, a tone or a run of musical notes does not).
NumPy only; fed the raw signal block by block, so a long file costs no more memory.

    meter = QualityMeter(sample_rate=16000)
    for block in blocks: meter.add(block)           # raw audio, before silence removal
    q = meter.result(speech_seconds)                # Quality
    QualityLimits().check(q, path)                  # NotSpeech if below a minimum

The measures (each on 25 ms frames every 10 ms, the VAD's own frames):

- ``speech_s``: seconds of speech the VAD kept (given by the caller, who removed silence);
- ``snr_db``: the 95th percentile frame power over the 10th percentile (the noise floor),
  in dB, at most 80: speech with pauses scores high; steady noise, tones and noise that
  never stops score low;
- ``clipping``: the share of samples at full scale (|x| >= 0.999);
- ``dynamics_db``: on the speech frames, the log-mel spectrum (64 bins, its own fixed
  settings, so the limits mean the same for every model) smoothed over 50 ms, then the
  median over frames of the spread across bins of its change over 50 ms, in dB. A
  change of level alone does not count (the spread removes it). On the shared speech
  set's 2,404 files one is below 2.8 dB (2.4), the rest above; its two noise recordings
  reach 2.7 dB, synthetic note sequences, noise bursts and white noise less; tones, chirps
  and white noise have no pauses and an SNR estimate near 0 dB (``bench/calibration.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from workers.audio import (
    HOP,
    SR,
    VAD_DB,
    VAD_FLOOR_DB,
    WIN,
    NoSpeech,
    frame_energy_db,
    speech_mask,
)

SNR_CAP_DB = 80.0
CLIP_LEVEL = 0.999
DYNAMICS_SMOOTH = 5  # frames (50 ms)
DYNAMICS_LAG = 5  # frames (50 ms)


class NotSpeech(NoSpeech):
    """An input whose quality is below a minimum (noise, a tone, music, too little speech)."""

    reason = "not_speech"


@dataclass(frozen=True)
class Quality:
    speech_s: float
    snr_db: float
    clipping: float
    dynamics_db: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class QualityLimits:
    """The minimums an input must reach to be embedded (``--min-speech`` etc. on the
    commands). Chosen on the shared speech set against its noise recordings and synthetic
    non-speech: no speech file refused, no non-speech accepted (``bench/calibration.py``).

    The spectral-dynamics minimum is lower (``clean_factor`` of it) for a clean input, one
    whose SNR is at least ``clean_snr_db``: steady noise is never that clean (at most 10 dB
    in the noise recordings), and calm read speech recorded cleanly can move less than
    2.8 dB (a LibriSpeech file: 2.4 dB at 28 dB SNR)."""

    min_speech_s: float = 0.5
    min_snr_db: float = 1.5
    min_dynamics_db: float = 2.8
    max_clipping: float = 0.2
    clean_snr_db: float = 15.0
    clean_factor: float = 0.82  # 2.3 dB of the default 2.8

    def dynamics_needed(self, q: Quality) -> float:
        """The spectral-dynamics minimum for ``q``: lower for a clean recording."""
        clean = q.snr_db >= self.clean_snr_db
        return self.min_dynamics_db * (self.clean_factor if clean else 1.0)

    def score(self, q: Quality) -> float:
        """One number for how speech-like ``q`` is relative to the limits: below 1 is
        refused. The smaller of the SNR and dynamics ratios (the AUROC is measured on it)."""
        snr = q.snr_db / self.min_snr_db if self.min_snr_db > 0 else np.inf
        need = self.dynamics_needed(q)
        dyn = q.dynamics_db / need if need > 0 else np.inf
        return float(min(snr, dyn))

    def problems(self, q: Quality) -> list[str]:
        out = []
        if q.speech_s < self.min_speech_s:
            out.append(
                f"no speech detected (only {q.speech_s:.2f} s of speech after silence "
                f"removal, need {self.min_speech_s:g} s)"
            )
        if q.snr_db < self.min_snr_db:
            out.append(f"SNR about {q.snr_db:.1f} dB (minimum {self.min_snr_db:g} dB)")
        need = self.dynamics_needed(q)
        if q.dynamics_db < need:
            out.append(
                f"spectral dynamics {q.dynamics_db:.2f} dB (minimum {need:.3g} dB at "
                f"{q.snr_db:.0f} dB SNR: steady noise, a tone or music, not speech)"
            )
        if q.clipping > self.max_clipping:
            out.append(
                f"{100 * q.clipping:.0f}% of samples clipped (maximum {100 * self.max_clipping:g}%)"
            )
        return out

    def check(self, q: Quality, path: str | Path) -> None:
        problems = self.problems(q)
        if problems:
            raise NotSpeech(
                path,
                "refused as speech: " + "; ".join(problems) + " (if this is speech, lower "
                "the limit with --min-speech, --min-snr or --min-dynamics)",
            )


class QualityMeter:
    """Accumulates the measures over raw audio blocks (before silence removal)."""

    def __init__(
        self,
        sample_rate: int = SR,
        win: int = WIN,
        hop: int = HOP,
        vad_db: float = VAD_DB,
        vad_floor_db: float = VAD_FLOOR_DB,
    ) -> None:
        self.sr, self.win, self.hop = sample_rate, win, hop
        self.vad_db, self.vad_floor_db = vad_db, vad_floor_db
        self.powers: list[np.ndarray] = []
        self.changes: list[np.ndarray] = []
        self.samples = self.clipped = 0
        self._logmel = None

    def _mel(self, x: np.ndarray) -> np.ndarray:
        if self._logmel is None:
            from cluster.config import FeatureConfig
            from workers.features import LogMel

            self._logmel = LogMel(FeatureConfig(sample_rate=self.sr, fmax=self.sr / 2))
        return self._logmel(x.astype(np.float32))

    def add(self, signal: np.ndarray) -> None:
        x = np.asarray(signal, dtype=np.float32)
        self.samples += len(x)
        self.clipped += int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
        if len(x) < self.win:
            return
        self.powers.append(10 ** (frame_energy_db(x, self.win, self.hop) / 10))
        mask = speech_mask(x, self.win, self.hop, self.vad_db, self.vad_floor_db)
        mel = self._mel(x).astype(np.float64)
        n = min(len(mel), len(mask))
        mel = mel[:n][mask[:n]]
        if len(mel) < DYNAMICS_SMOOTH + DYNAMICS_LAG:
            return
        kernel = np.ones(DYNAMICS_SMOOTH) / DYNAMICS_SMOOTH
        smooth = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, mel)
        if len(smooth) > DYNAMICS_LAG:
            self.changes.append((smooth[DYNAMICS_LAG:] - smooth[:-DYNAMICS_LAG]).std(axis=1))

    def result(self, speech_s: float) -> Quality:
        powers = np.concatenate(self.powers) if self.powers else np.zeros(1)
        floor = max(float(np.percentile(powers, 10)), 1e-12)
        peak = float(np.percentile(powers, 95))
        snr = min(10 * np.log10(max(peak, 1e-12) / floor), SNR_CAP_DB)
        changes = np.concatenate(self.changes) if self.changes else np.zeros(1)
        return Quality(
            speech_s=float(speech_s),
            snr_db=float(snr),
            clipping=self.clipped / max(self.samples, 1),
            dynamics_db=float(np.median(changes)),
        )
