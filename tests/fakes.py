"""Shared test helpers: small real audio files, good and bad, written on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def voice(
    seconds: float, sr: int = 16000, f0: float = 150.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A buzzy harmonic tone with a little noise: enough like voiced speech for the front end."""
    rng = rng or np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    x = x + 0.01 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_wav(
    path: Path,
    seconds: float = 1.5,
    sr: int = 16000,
    f0: float = 150.0,
    rng: np.random.Generator | None = None,
    channels: int = 1,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = voice(seconds, sr, f0, rng)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(path, data, sr)
    return path


def write_bad_files(folder: Path) -> dict[str, Path]:
    """One file of each bad kind inside a speaker folder; returns kind -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "good_source.wav", 2.0)
    raw = good.read_bytes()
    good.unlink()
    files = {
        "corrupt": folder / "corrupt.wav",
        "truncated": folder / "truncated.wav",
        "empty": folder / "empty.wav",
        "silent": folder / "silent.wav",
        "too_short": folder / "short.wav",
        "unsupported": folder / "tune.mid",
        "bad_m4a": folder / "voice.m4a",
        "not_audio": folder / "notes.txt",
        "fake_audio": folder / "text.flac",
    }
    files["corrupt"].write_bytes(b"RIFF" + raw[4:12] + b"garbage" * 20)
    files["truncated"].write_bytes(raw[: len(raw) // 3])
    files["empty"].write_bytes(b"")
    sf.write(files["silent"], np.zeros(32000, dtype=np.float32), 16000)
    sf.write(files["too_short"], np.zeros(1600, dtype=np.float32) + 0.1, 16000)
    files["unsupported"].write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60")
    files["bad_m4a"].write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)
    files["not_audio"].write_text("transcript of nothing\n")
    files["fake_audio"].write_text("this is text pretending to be flac\n" * 20)
    return files


def to_m4a(src: Path, dst: Path) -> Path:
    """AAC in an MP4 container, as VoxCeleb2 ships it (encoded by FFmpeg through PyAV)."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    x, sr = sf.read(src, dtype="float32")
    with av.open(str(dst), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return dst
