"""A synthetic multi-speaker corpus: the embedded default for the demo and for tests.

Each speaker is a source-filter voice with persistent traits: pitch range,
vocal-tract length (formant scaling), its own vowel formant idiolect, jitter,
shimmer, breathiness, glottal open quotient and speaking rate. Each utterance
has new content (a random syllable string with its own intonation) and its own
channel (band limits, spectral tilt, gain and background noise at a random SNR),
so identity lives in the voice and not in a per-file constant. Output is a
LibriSpeech-layout folder of 16 kHz FLAC files; the same seed gives the same
corpus, bit for bit.

    python -m workers.synthetic OUT --speakers 40 --utterances 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
from tqdm import tqdm

from cluster.config import SyntheticConfig
from workers.audio import SR
from workers.augment import random_channel
from workers.cache_root import default_cache_root

log = logging.getLogger(__name__)

# F1, F2, F3 (Hz) of eight vowels for an average adult vocal tract.
VOWELS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [530, 1840, 2480],
        [660, 1720, 2410],
        [300, 870, 2240],
        [570, 840, 2410],
        [440, 1020, 2240],
        [490, 1350, 1690],
    ],
    dtype=np.float64,
)
BANDWIDTHS = np.array([80.0, 100.0, 140.0])


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz, centre of the pitch range
    f0_range: float  # semitones of intonation swing
    vtl: float  # formant scale: >1 shorter tract, higher formants
    idiolect: tuple  # per-vowel formant multipliers, 8 x 3
    jitter: float
    shimmer: float
    breath: float
    open_quotient: float
    rate: float  # syllables per second


def make_voice(rng: np.random.Generator) -> Voice:
    low = rng.random() < 0.5
    return Voice(
        f0=float(rng.uniform(85, 150) if low else rng.uniform(165, 255)),
        f0_range=float(rng.uniform(1.5, 5.0)),
        vtl=float(rng.uniform(0.86, 1.16) * (1.0 if low else 1.12)),
        idiolect=tuple(map(tuple, rng.uniform(0.9, 1.1, size=(8, 3)))),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.12)),
        breath=float(rng.uniform(0.02, 0.35)),
        open_quotient=float(rng.uniform(0.4, 0.75)),
        rate=float(rng.uniform(3.0, 6.0)),
    )


def _glottal(phase: np.ndarray, oq: float) -> np.ndarray:
    """Rosenberg glottal flow pulse over one period, phase in [0, 1)."""
    tp = 0.6 * oq
    rise = 0.5 * (1 - np.cos(np.pi * phase / tp))
    fall = np.cos(0.5 * np.pi * (phase - tp) / (oq - tp))
    return np.where(phase < tp, rise, np.where(phase < oq, fall, 0.0))


def _resonator(f: float, bw: float) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bw / SR)
    theta = 2 * np.pi * f / SR
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([a.sum()]), a  # unit gain at DC


def _voiced(voice: Voice, f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = f0 * (1 + voice.jitter * rng.standard_normal(len(f0)))
    phase = np.cumsum(f / SR) % 1.0
    flow = _glottal(phase, voice.open_quotient)
    # Shimmer: amplitude wobbles from period to period.
    periods = np.cumsum(np.diff(phase, prepend=phase[0]) < 0)
    amp = 1 + voice.shimmer * rng.standard_normal(periods[-1] + 1)
    source = np.diff(flow * amp[periods], prepend=0.0)  # lip radiation: differentiate
    noise = rng.standard_normal(len(f0)) * (0.3 + flow)  # breath noise, pulsed with the flow
    return source + voice.breath * 0.05 * noise


def _syllable(voice: Voice, f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = int(rng.integers(len(VOWELS)))
    formants = VOWELS[v] * voice.vtl * np.asarray(voice.idiolect[v])
    x = _voiced(voice, f0, rng)
    for fr, bw in zip(formants, BANDWIDTHS * voice.vtl, strict=True):
        b, a = _resonator(min(fr, SR / 2 - 400), bw)
        x = scipy.signal.lfilter(b, a, x)
    env = np.sin(np.linspace(0, np.pi, len(x))) ** 0.6
    if rng.random() < 0.6:  # a fricative or plosive onset: shaped noise burst
        n = int(SR * rng.uniform(0.03, 0.09))
        lo = rng.uniform(1500, 4000) * voice.vtl
        sos = scipy.signal.butter(2, [lo, min(lo * 2.2, 7600)], "bandpass", fs=SR, output="sos")
        burst = scipy.signal.sosfilt(sos, rng.standard_normal(n)) * rng.uniform(0.1, 0.4)
        x = np.concatenate([burst * np.std(x) * 8, x * env])
        return x
    return x * env


def synth_utterance(voice: Voice, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like audio: syllables with intonation and pauses, then a random channel."""
    out: list[np.ndarray] = []
    total = 0
    n_target = int(seconds * SR)
    base = voice.f0 * 2 ** (rng.uniform(-0.3, 0.3) * voice.f0_range / 12)
    while total < n_target:
        dur = rng.uniform(0.6, 1.4) / voice.rate
        n = int(dur * SR)
        t = np.linspace(0, 1, n)
        semis = (
            voice.f0_range * (rng.uniform(-0.5, 0.5) + 0.3 * np.sin(np.pi * t))
            - 1.5 * total / n_target
        )  # declination over the utterance
        seg = _syllable(voice, base * 2 ** (semis / 12), rng)
        out.append(seg)
        total += len(seg)
        if rng.random() < 0.25:  # a pause between words
            gap = np.zeros(int(SR * rng.uniform(0.08, 0.3)))
            out.append(gap)
            total += len(gap)
    x = np.concatenate(out)[:n_target]
    return apply_channel(x / (np.abs(x).max() + 1e-9), rng)


def apply_channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y = random_channel(x, rng, SR)
    snr_db = rng.uniform(12, 40)
    noise = rng.standard_normal(len(y))
    if rng.random() < 0.5:  # pink-ish noise
        noise = scipy.signal.lfilter([1.0], [1.0, -0.95], noise)
    noise *= np.std(y) / (np.std(noise) + 1e-12) * 10 ** (-snr_db / 20)
    y = (y + noise) * rng.uniform(0.2, 0.9) / (np.abs(y + noise).max() + 1e-9)
    return y.astype(np.float32)


def generate(out: str | Path, cfg: SyntheticConfig, progress: bool = False) -> Path:
    """Write the corpus to ``out`` (LibriSpeech layout); returns ``out``."""
    out = Path(out)
    if cfg.speakers < 2 or cfg.utterances < 1:
        raise ValueError("a synthetic corpus needs at least 2 speakers and 1 utterance each")
    out.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(cfg.seed)
    seqs = root.spawn(cfg.speakers)
    for s in tqdm(range(cfg.speakers), desc="synthetic corpus", unit="spk", disable=not progress):
        rng = np.random.default_rng(seqs[s])
        voice = make_voice(rng)
        speaker = str(100 + s)
        for u in range(cfg.utterances):
            chapter = str(1000 + 10 * s + u % 2)
            folder = out / speaker / chapter
            folder.mkdir(parents=True, exist_ok=True)
            secs = cfg.seconds * rng.uniform(0.8, 1.25)
            sf.write(
                folder / f"{speaker}-{chapter}-{u:04d}.flac",
                synth_utterance(voice, secs, rng),
                SR,
                subtype="PCM_16",
            )
    (out / "voices.json").write_text(json.dumps(asdict(cfg)))
    return out


def ensure_corpus(cfg: SyntheticConfig, cache_dir: str = "") -> Path:
    """The corpus for ``cfg`` under the cache, generated once (atomically) and reused."""
    key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    final = default_cache_root(cache_dir) / "synthetic" / key
    if (final / "voices.json").exists():
        return final
    tmp = final.with_name(f".{key}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("generating the synthetic corpus (%d speakers) in %s", cfg.speakers, final)
    generate(tmp, cfg, progress=sys.stderr.isatty())
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workers.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", help="folder to write (LibriSpeech layout)")
    p.add_argument("--speakers", type=int, default=40)
    p.add_argument("--utterances", type=int, default=8, help="per speaker")
    p.add_argument("--seconds", type=float, default=3.0, help="mean utterance length")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        generate(a.out, SyntheticConfig(a.speakers, a.utterances, a.seconds, a.seed), progress=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
