"""Corpus speed: scanning 100,000 files in the VoxCeleb2 layout (AAC .m4a) cold (every
header read) and warm (manifest cache hit), the share of the warm scan spent on the
content check (first and last 4 KiB of every file, read on every scan so that other
audio with a restored mtime is noticed), and ``workers.transcode`` (AAC -> FLAC)
throughput with 1 and 2 Ray workers, in one run.

python bench/corpus.py [--files 100000] [--transcode-files 300]

The corpus is hard links to real speech encoded as AAC once (the shared set when
present, else the repository's test fixture): real headers, little disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, SHARED_SPEECH, quiet_ray_env, report  # noqa: E402
from workers.audio import audio_info  # noqa: E402
from workers.corpus import SpeakerDatabase  # noqa: E402


def sources(tmp: Path, n: int = 40) -> list[Path]:
    """``n`` real recordings as VoxCeleb2-style AAC files."""
    from tests.fakes import to_m4a

    speech = SHARED_SPEECH if SHARED_SPEECH.exists() else ROOT / "tests" / "data" / "speech"
    found = sorted(p for ext in ("*.wav", "*.flac") for p in speech.glob(f"*/{ext}"))
    step = max(1, len(found) // n)
    return [to_m4a(f, tmp / "src" / f"{i:03d}.m4a") for i, f in enumerate(found[::step][:n])]


def build(root: Path, n: int, src: list[Path], per_video: int = 8, per_speaker: int = 40) -> None:
    """``dev/aac/idNNNNN/<video>/NNNNN.m4a`` hard links (copies on another filesystem)."""
    for i in range(n):
        spk, utt = divmod(i, per_speaker)
        video = f"v{utt // per_video:02d}-{spk:05d}xYz"
        dst = root / "dev" / "aac" / f"id{spk:05d}" / video / f"{utt % per_video + 1:05d}.m4a"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src[i % len(src)], dst)
        except OSError:
            shutil.copy(src[i % len(src)], dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--transcode-files", type=int, default=300)
    a = p.parse_args()
    quiet_ray_env()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = sources(tmp)
        root, cache = tmp / "VoxCeleb2", tmp / "cache"
        build(root, a.files, src)
        t0 = time.perf_counter()
        db = SpeakerDatabase.scan(root, cache_dir=str(cache))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        SpeakerDatabase.scan(root, cache_dir=str(cache))
        warm = time.perf_counter() - t0
        from workers.corpus import content_hash

        # the whole-file hash alone, on the same files (a cold scan does it once per file,
        # a warm one only for files whose inode status changed), and on the real speech set
        t0 = time.perf_counter()
        hashed = sum(1 for u in db.utterances if content_hash(db.root / u.path))
        check = time.perf_counter() - t0
        mb = sum(u.size for u in db.utterances) / 1e6
        real = list(SHARED_SPEECH.rglob("*.*")) if SHARED_SPEECH.is_dir() else []
        real = [f for f in real if f.suffix.lower() in (".wav", ".flac")]
        for f in real:  # read once into the page cache: the hash, not the disk, is timed
            f.read_bytes()
        t0 = time.perf_counter()
        for f in real:
            content_hash(f)
        real_s = time.perf_counter() - t0
        real_hours = sum(frames / sr for frames, sr in map(audio_info, real)) / 3600
        real_mb = sum(f.stat().st_size for f in real) / 1e6
        figures = {
            "bench": "corpus",
            "layout": db.layout,
            "files": a.files,
            "speakers": len(db.speakers),
            "hours": round(sum(u.seconds for u in db.utterances) / 3600, 2),
            "cold_scan_s": round(cold, 3),
            "warm_scan_s": round(warm, 3),
            "content_hash_s": round(check, 3),
            "content_hash_files": hashed,
            "content_hash_mb_per_s": round(mb / check, 1),
            "content_hash_s_per_audio_hour_16k_wav_flac": round(real_s / real_hours, 3)
            if real
            else None,
            "content_hash_real_mb_per_s": round(real_mb / real_s, 1) if real else None,
            "files_per_s_cold": round(a.files / cold),
            "files_per_s_warm": round(a.files / warm),
        }
        import ray

        from cluster.ray_session import init_ray
        from workers.transcode import transcode

        small = tmp / "small"
        build(small, a.transcode_files, src)
        init_ray(num_cpus=2)
        warm = tmp / "warm"  # start both Ray workers before timing either side
        build(warm, 16, src)
        transcode(warm, tmp / "warm-out", workers=2, chunk=4, progress=False)
        for workers in (1, 2):
            out = tmp / f"flac-{workers}"
            r = transcode(small, out, workers=workers, chunk=8, progress=False)
            assert r["done"] == a.transcode_files, r
            figures[f"transcode_{workers}w_files_per_s"] = r["files_per_second"]
            figures[f"transcode_{workers}w_audio_h_per_s"] = r["audio_hours_per_second"]
        figures["transcode_2w_over_1w"] = round(
            figures["transcode_2w_files_per_s"] / figures["transcode_1w_files_per_s"], 2
        )
        ray.shutdown()
        report(figures)


if __name__ == "__main__":
    main()
