"""Convert a corpus to 16-bit mono FLAC once, in parallel on the Ray cluster.

For users who prefer to decode AAC (VoxCeleb2), MP3 or 48 kHz audio once rather
than in every producer. The output keeps the corpus's own folders and names
(``dev/aac/id00012/21Uxsk56VDQ/00001.m4a`` -> ``.../00001.flac``), so it is
recognised as the same layout; a Kaldi folder or CSV manifest becomes
``<speaker>/<utterance-id>.flac``. Each file is decoded in blocks (bounded
memory, any length), resampled to ``--rate``, written under a temporary name and
renamed into place: a killed run leaves no half-written file, and running the
command again converts only what is missing. Files that cannot be decoded are
listed in OUT/transcode-skipped.tsv.

Examples:
    python -m workers.transcode ~/VoxCeleb2 ~/VoxCeleb2-flac
    python -m workers.transcode ~/VoxCeleb2 /data/vox2-flac --address auto   # on a Ray cluster
    python -m learner --data ~/VoxCeleb2-flac
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import ray
import soundfile as sf
from tqdm import tqdm

from cluster.ray_session import init_ray
from workers.audio import SR, AudioError, audio_blocks
from workers.listings import ListingError, list_root, utterance_id

log = logging.getLogger(__name__)


def plan(src: Path, out: Path, layout: str = "auto") -> list[tuple[str, str]]:
    """``(source file, output file)`` for every audio file the corpus lists."""
    listing = list_root(src, layout, mic="both")
    jobs = []
    for item in listing.items:
        if item.speaker is None or item.stat is None:
            continue  # outside the layout, or missing: the scan says why
        source = listing.base / item.path
        if Path(item.path).is_absolute() or listing.layout in ("kaldi", "manifest"):
            utt = re.sub(r"[^\w.-]+", "_", item.utt or utterance_id(Path(item.path).name))
            rel = Path(re.sub(r"[^\w.-]+", "_", item.speaker)) / f"{utt}.flac"
        else:
            rel = Path(item.path).with_suffix(".flac")
        jobs.append((str(source), str(out / rel)))
    return jobs


def convert(source: str, target: str, rate: int) -> float:
    """One file to FLAC at ``rate``; returns its seconds. ``AudioError`` if undecodable."""
    dst = Path(target)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    frames = 0
    try:
        with sf.SoundFile(tmp, "w", rate, 1, "PCM_16", format="FLAC") as fh:
            for block in audio_blocks(source, rate, 60.0):
                fh.write(np.clip(block, -1.0, 32767 / 32768))
                frames += len(block)
        if not frames:
            raise AudioError(source, "no samples")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return frames / rate


def convert_chunk(jobs: list[tuple[str, str]], rate: int) -> dict:
    done, seconds, failed = 0, 0.0, []
    for source, target in jobs:
        try:
            seconds += convert(source, target, rate)
            done += 1
        except AudioError as exc:
            failed.append((source, str(exc)))
    return {"done": done, "seconds": seconds, "failed": failed}


def transcode(
    src: Path,
    out: Path,
    rate: int = SR,
    workers: int | None = None,
    chunk: int = 16,
    layout: str = "auto",
    progress: bool = True,
    jobs: list[tuple[str, str]] | None = None,
) -> dict:
    """Convert what is not converted yet, ``workers`` Ray tasks at a time (default: as many
    as the cluster has CPUs); returns counts, audio seconds and throughput. ``jobs``: a
    :func:`plan` already made."""
    jobs = plan(src, out, layout) if jobs is None else jobs
    todo = [j for j in jobs if not Path(j[1]).exists()]
    totals = {"files": len(jobs), "already": len(jobs) - len(todo), "done": 0, "seconds": 0.0}
    failed: list[tuple[str, str]] = []
    limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1, max_retries=3)(convert_chunk)
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
    t0 = time.perf_counter()
    pending: dict = {}
    with tqdm(total=len(todo), unit="file", desc="to FLAC", disable=not progress) as bar:
        while chunks or pending:
            while chunks and len(pending) < limit:
                part = chunks.pop(0)
                pending[task.remote(part, rate)] = len(part)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                bar.update(pending.pop(ref))
                result = ray.get(ref)
                totals["done"] += result["done"]
                totals["seconds"] += result["seconds"]
                failed += result["failed"]
    wall = time.perf_counter() - t0
    totals.update(
        failed=len(failed),
        wall_seconds=round(wall, 3),
        files_per_second=round(totals["done"] / wall, 2) if wall else 0.0,
        audio_hours_per_second=round(totals["seconds"] / 3600 / wall, 5) if wall else 0.0,
    )
    if failed:
        out.mkdir(parents=True, exist_ok=True)
        (out / "transcode-skipped.tsv").write_text("".join(f"{s}\t{r}\n" for s, r in failed))
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workers.transcode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="corpus: a folder in any layout, a Kaldi data folder or a CSV")
    p.add_argument("out", help="output folder (created; converting again resumes)")
    p.add_argument("--rate", type=int, default=SR, help=f"sample rate to write (Hz; default {SR})")
    p.add_argument("--layout", default="auto", help="corpus layout (default: detected)")
    p.add_argument("--workers", type=int, help="files converted at once (default: all CPUs)")
    p.add_argument("--address", default=None, help="Ray address ('auto' to join a cluster)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for a local Ray instance")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    src, out = Path(a.src).expanduser().resolve(), Path(a.out).expanduser().resolve()
    if a.rate < 1000:
        p.error("--rate must be at least 1000 Hz")
    if out == src or (src.is_dir() and src in out.parents):
        p.error("the output folder must not be inside the corpus")
    try:
        if not src.exists():
            raise ListingError(f"{src} does not exist")
        jobs = plan(src, out, a.layout)  # fails before Ray starts on a corpus of nothing
    except ListingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_ray(a.address, num_cpus=a.cpus)
    totals = transcode(src, out, a.rate, a.workers, progress=sys.stderr.isatty(), jobs=jobs)
    print(
        f"{out}: {totals['done']} converted ({totals['seconds'] / 3600:.2f} h of audio, "
        f"{totals['files_per_second']} files/s), {totals['already']} already there, "
        f"{totals['failed']} failed" + (" (see transcode-skipped.tsv)" if totals["failed"] else "")
    )
    return 0 if totals["done"] + totals["already"] else 2


if __name__ == "__main__":
    raise SystemExit(main())
