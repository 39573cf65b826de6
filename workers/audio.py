"""Audio stages: read a file, mix to mono, resample, drop silence.

Each stage is a small pure function: ``load_audio`` (path -> float32 mono at the
target rate) and ``remove_silence`` (signal -> signal with non-speech frames
removed, at the ends and inside). ``AudioError`` subclasses say why a file was
refused, so the corpus can count each reason.

Two decoders: libsndfile (``soundfile``: WAV, FLAC, MP3, Ogg/Opus, AIFF, AU, NIST
SPHERE, ...) and FFmpeg through PyAV for what libsndfile does not read: AAC/M4A
(VoxCeleb2), MP4, WebM, WMA, AMR. ``audio_info`` reads only headers.

    frames, rate = audio_info("a.flac")            # the header only
    x = load_audio("a.m4a")                        # float32 mono at 16 kHz
    speech = remove_silence(x)                     # NoSpeech / TooShort when nothing is left
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cluster.config import FeatureConfig

# The front end's defaults, read from the one place they are set (cluster.config).
FRONT_END = FeatureConfig()
SR, WIN, HOP = FRONT_END.sample_rate, FRONT_END.win_length, FRONT_END.hop_length
VAD_DB, VAD_FLOOR_DB = FRONT_END.vad_db, FRONT_END.vad_floor_db

# What libsndfile reads, and what goes through FFmpeg (PyAV).
SOUNDFILE_EXTENSIONS = (
    ".wav",
    ".flac",
    ".mp3",
    ".ogg",
    ".opus",
    ".aiff",
    ".aif",
    ".aifc",
    ".au",
    ".snd",
    ".sph",
    ".nist",
    ".caf",
    ".w64",
    ".rf64",
)
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".mp4", ".webm", ".wma", ".amr", ".mka", ".ape", ".wv", ".tta")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS


class AudioError(Exception):
    """A file that cannot be used as speech; ``reason`` is a short counting key."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = str(path)


class UnreadableAudio(AudioError):
    reason = "unreadable"


class EmptyAudio(AudioError):
    reason = "empty"


class NoSpeech(AudioError):
    reason = "no_speech"


class TooShort(AudioError):
    reason = "too_short"


def check_file(path: str | Path) -> None:
    """A recording is a regular file that exists and can be opened: say which of these fails
    (a pipe would block its reader forever, ``/dev/zero`` never ends, and a missing file is
    not a decoding error)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UnreadableAudio(path, "no such file") from None
    except PermissionError:
        raise UnreadableAudio(path, "permission denied") from None
    except OSError as exc:
        raise UnreadableAudio(path, f"cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a folder"
            if stat.S_ISDIR(mode)
            else "a pipe"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket or other special file"
        )
        raise UnreadableAudio(path, f"not a regular file ({kind}): refused")
    if not os.access(path, os.R_OK):
        raise UnreadableAudio(path, "permission denied")


def _ffmpeg(path: str | Path) -> bool:
    return str(path).lower().endswith(FFMPEG_EXTENSIONS)


def audio_info(path: str | Path) -> tuple[int, int]:
    """``(frames, sample_rate)`` from the file's header, without decoding; an
    :class:`AudioError` when there is no readable audio."""
    check_file(path)
    if _ffmpeg(path):
        frames, sr = _av_info(path)
    else:
        try:
            info = sf.info(str(path))
        except Exception as exc:  # soundfile raises several types for bad files
            raise UnreadableAudio(path, f"cannot read the header ({exc})") from None
        frames, sr = int(info.frames), int(info.samplerate)
    if frames <= 0 or sr <= 0:
        raise EmptyAudio(path, "no samples")
    return frames, sr


def _av_info(path: str | Path) -> tuple[int, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UnreadableAudio(path, "no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / 1e6
            return int(round(seconds * stream.rate)), int(stream.rate)
    except av.error.FFmpegError as exc:
        raise UnreadableAudio(path, f"cannot read the header ({exc})") from None


def _av_blocks(path: str | Path, sample_rate: int, seconds: float) -> Iterator[np.ndarray]:
    """FFmpeg decodes, down-mixes and resamples (swresample); blocks of about ``seconds``."""
    import av

    want = max(1, int(seconds * sample_rate))
    parts: list[np.ndarray] = []
    have = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UnreadableAudio(path, "no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in itertools.chain(container.decode(stream), [None]):  # None: flush
                for out in resampler.resample(frame):
                    part = out.to_ndarray().reshape(-1)
                    parts.append(part)
                    have += len(part)
                if have >= want:
                    yield np.concatenate(parts)
                    parts, have = [], 0
    except av.error.FFmpegError as exc:
        raise UnreadableAudio(path, f"cannot decode audio ({exc})") from None
    if parts:
        yield np.concatenate(parts)


def load_audio(path: str | Path, sample_rate: int = SR) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate``; raise an :class:`AudioError`."""
    check_file(path)
    if _ffmpeg(path):  # FFmpeg down-mixes and resamples; blocks are checked as they come
        blocks = list(audio_blocks(path, sample_rate, 3600.0))
        signal = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if signal.size == 0:
            raise EmptyAudio(path, "no samples")
        return np.ascontiguousarray(signal, dtype=np.float32)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        raise UnreadableAudio(path, f"cannot decode audio ({exc})") from None
    if data.size == 0:
        raise EmptyAudio(path, "no samples")
    signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(signal).all():
        raise UnreadableAudio(path, "samples contain NaN or infinity")
    if sr != sample_rate:
        signal = soxr.resample(signal, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(signal, dtype=np.float32)


def audio_blocks(
    path: str | Path, sample_rate: int = SR, seconds: float = 60.0
) -> Iterator[np.ndarray]:
    """``load_audio`` for long files: float32 mono blocks of about ``seconds`` at
    ``sample_rate``, decoded and resampled as a stream, so memory stays bounded by the block,
    not by the file (an hour of 48 kHz stereo is over 2 GB as one float array)."""
    check_file(path)
    if _ffmpeg(path):
        for block in _av_blocks(path, sample_rate, seconds):
            if not np.isfinite(block).all():
                raise UnreadableAudio(path, "samples contain NaN or infinity")
            yield block
        return
    try:
        fh = sf.SoundFile(str(path))
    except Exception as exc:  # soundfile raises several types for bad files
        raise UnreadableAudio(path, f"cannot decode audio ({exc})") from None
    with fh:
        sr = fh.samplerate
        stream = soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality="HQ")
        frames = max(1, int(seconds * sr))
        while True:
            try:
                data = fh.read(frames, dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001 - a damaged body part way through
                raise UnreadableAudio(path, f"cannot decode audio ({exc})") from None
            last = len(data) < frames
            signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            if not np.isfinite(signal).all():
                raise UnreadableAudio(path, "samples contain NaN or infinity")
            if sr != sample_rate:
                signal = stream.resample_chunk(np.ascontiguousarray(signal), last=last)
            if len(signal):
                yield np.ascontiguousarray(signal, dtype=np.float32)
            if last:
                return


def frame_energy_db(signal: np.ndarray, win: int, hop: int) -> np.ndarray:
    """Mean-square energy in dBFS of each frame of ``win`` samples every ``hop``."""
    if len(signal) < win:
        signal = np.pad(signal, (0, win - len(signal)))
    n = 1 + (len(signal) - win) // hop
    frames = np.lib.stride_tricks.as_strided(
        signal, shape=(n, win), strides=(signal.strides[0] * hop, signal.strides[0])
    )
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / win
    return 10.0 * np.log10(power + 1e-12)


def speech_mask(
    signal: np.ndarray,
    win: int = WIN,
    hop: int = HOP,
    rel_db: float = VAD_DB,
    floor_db: float = VAD_FLOOR_DB,
    hangover: int = 5,
) -> np.ndarray:
    """Per-frame speech decision: loud enough relative to the loudest frame and absolutely.

    ``hangover`` frames on each side of speech are kept, so word onsets and
    decays are not clipped.
    """
    energy = frame_energy_db(signal, win, hop)
    threshold = max(energy.max() - rel_db, floor_db)
    mask = energy > threshold
    if hangover and mask.any():
        kernel = np.ones(2 * hangover + 1, dtype=np.int32)
        mask = np.convolve(mask.astype(np.int32), kernel, mode="same") > 0
    return mask


def remove_silence(
    signal: np.ndarray,
    sample_rate: int = SR,
    win: int = WIN,
    hop: int = HOP,
    rel_db: float = VAD_DB,
    floor_db: float = VAD_FLOOR_DB,
    path: str | Path = "<signal>",
) -> np.ndarray:
    """Keep only speech regions, inside the utterance as well as at its ends."""
    mask = speech_mask(signal, win, hop, rel_db, floor_db)
    if not mask.any():
        raise NoSpeech(path, "no speech detected (silent or below the energy floor)")
    # Frame i covers samples [i*hop, i*hop+win); keep the hop-sized slice each speech frame owns.
    keep = np.repeat(mask, hop)
    tail = len(signal) - len(keep)
    if tail > 0:
        keep = np.concatenate([keep, np.full(tail, mask[-1])])
    return signal[keep[: len(signal)]]


def load_speech(path: str | Path, feature_cfg) -> np.ndarray:
    """``load_audio`` then ``remove_silence`` with the feature config's VAD settings."""
    signal = load_audio(path, feature_cfg.sample_rate)
    return remove_silence(
        signal,
        feature_cfg.sample_rate,
        feature_cfg.win_length,
        feature_cfg.hop_length,
        feature_cfg.vad_db,
        feature_cfg.vad_floor_db,
        path=path,
    )
