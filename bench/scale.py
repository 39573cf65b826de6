"""A corpus of VoxCeleb2's size through the real code path: indexing, a producer's start, its
sampler and what the caches would hold.

The corpus is simulated: ``--utterances`` files for ``--speakers`` speakers in VoxCeleb's
layout (``wav/idNNNNN/video/NNNNN.wav``), each a symbolic link to a file of the shared
speech set (round robin), so every path is distinct while the disk holds no copy. Prints:

- the time to build the tree, to index it cold (every header read, every file hashed) and
  warm (from the manifest cache);
- the driver's warm scan and the snapshot it writes (``runs/<id>/corpus.npz``);
- a producer's start as a producer does it, in a fresh process (``RunData.open`` of the
  snapshot, the sampler, a first draw), its wall time and the resident memory this adds;
- the memory of the corpus listing (``SpeakerDatabase``) per producer;
- the files and bytes the feature and speech caches would hold (one ``.npy`` per
  utterance today) at the measured bytes per second of audio.

python bench/scale.py [--utterances 1100000] [--speakers 6000] [--work DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

from bench.common import ROOT, SHARED_SPEECH, quiet_ray_env, report  # noqa: E402


def build(root: Path, utterances: int, speakers: int, sources: list[Path]) -> float:
    """The VoxCeleb-layout tree of links; returns its seconds."""
    t0 = time.perf_counter()
    per = utterances // speakers
    k = 0
    for s in range(speakers):
        count = per + (1 if s < utterances - per * speakers else 0)
        for v in range(0, count, 10):  # ten utterances per video, as VoxCeleb2 has about
            folder = root / "wav" / f"id{s:05d}" / f"video{v // 10:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for u in range(v, min(v + 10, count)):
                src = sources[k % len(sources)]
                os.symlink(src, folder / f"{u:05d}{src.suffix}")
                k += 1
    return time.perf_counter() - t0


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


PRODUCER = """
import json, sys, time, psutil
from cluster.config import config_from_dict, replace
from workers.rundata import RunData
from workers.sampler import TripletSampler
cfg = config_from_dict(json.loads(sys.argv[1]))
base = psutil.Process().memory_info().rss
t0 = time.perf_counter()
data = RunData.open(replace(cfg, data={"snapshot": sys.argv[2]}).data, cfg.synthetic)
TripletSampler(data.db, data.train, cfg.sampler.triplets, seed=0).sample()
ready = time.perf_counter() - t0
print(json.dumps([ready, (psutil.Process().memory_info().rss - base) / 2**20]))
"""


def shard_reads(folder: Path, shards: int = 3, per: int = 1000, reads: int = 20000) -> dict:
    """Random reads of base-sized segments (400 of 600 frames x 64, float16) from shards of
    ``per`` utterances, as a producer reads them (the index lookup, a view, a crop copied
    out), cold (just written, dropped from nothing) and then again warm."""
    import numpy as np

    from workers.shards import ShardIndex, write_shard

    rng = np.random.default_rng(0)
    for s in range(shards):
        entries = [
            (f"{s:02d}{k:05d}", rng.standard_normal((600, 64)).astype(np.float16))
            for k in range(per)
        ]
        write_shard(folder, f"s{s}", entries)
    t0 = time.perf_counter()
    index = ShardIndex.open(folder)
    opened = time.perf_counter() - t0
    keys = [
        f"{s:02d}{k:05d}"
        for s, k in zip(rng.integers(0, shards, reads), rng.integers(0, per, reads), strict=True)
    ]
    t0 = time.perf_counter()
    for key in keys:
        start = int(rng.integers(0, 200))
        np.array(index.get(key)[start : start + 400])
    took = time.perf_counter() - t0
    return {
        "shard_files": 2 * shards,
        "shard_index_open_s": round(opened, 3),
        "shard_reads_per_s": round(reads / took),
    }


def producer_start(cfg, snapshot: Path) -> tuple[float, float]:
    """Seconds until a fresh producer process has its corpus and sampler from the driver's
    snapshot, and the resident memory that adds (its imports excluded)."""
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", PRODUCER, json.dumps(cfg.to_dict()), str(snapshot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    ready, mb = json.loads(out.stdout.strip().splitlines()[-1])
    return ready, mb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--utterances", type=int, default=1_100_000)
    p.add_argument("--speakers", type=int, default=6000)
    p.add_argument("--work", help="folder for the tree and the caches (default: a temporary one)")
    a = p.parse_args()
    quiet_ray_env()
    speech = SHARED_SPEECH if SHARED_SPEECH.exists() else ROOT / "tests" / "data" / "speech"
    sources = sorted(f for f in speech.rglob("*") if f.suffix.lower() in (".wav", ".flac"))
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        tmp = Path(tmp)
        root, cache = tmp / "vox2-sim", tmp / "cache"
        os.environ["VE_CACHE_DIR"] = str(cache)
        built = build(root, a.utterances, a.speakers, sources)
        print(f"built {a.utterances:,} links in {built:.0f} s", file=sys.stderr, flush=True)

        from cluster.config import load_config
        from workers.corpus import SpeakerDatabase

        base = rss_mb()
        t0 = time.perf_counter()
        db = SpeakerDatabase.scan(root, cache_dir=str(cache))
        cold = time.perf_counter() - t0
        listing_mb = rss_mb() - base
        print(f"cold index {cold:.0f} s", file=sys.stderr, flush=True)
        hours = sum(u.seconds for u in db.utterances) / 3600
        del db
        gc.collect()

        cfg = load_config(
            "base",
            [
                f"data.path={root}",
                f"data.cache_dir={cache}",
                "augment.enabled=false",
                "data.feature_cache=readwrite",
            ],
        )
        from workers.rundata import RunData

        t0 = time.perf_counter()
        data = RunData.open(cfg.data, cfg.synthetic)  # warm: what the driver does at a start
        warm = time.perf_counter() - t0
        snapshot = tmp / "corpus.npz"
        t0 = time.perf_counter()
        data.db.save(snapshot)
        saved = time.perf_counter() - t0
        ready, producer_mb = producer_start(cfg, snapshot)
        print(f"warm index {warm:.0f} s, producer ready {ready:.1f} s", file=sys.stderr)

        # What the caches hold per second of audio, from a few real entries.
        source = data.source(cfg.features, memory_bytes=0)
        waves = data.waves(cfg.features)
        feat_bytes = wave_bytes = seconds = 0.0
        for i in range(0, len(data.db.utterances), max(1, len(data.db.utterances) // 40)):
            u = data.db.utterances[i]
            feat_bytes += source.get(i).nbytes
            wave_bytes += waves.get(i).nbytes
            seconds += u.seconds
        snapshot_bytes = snapshot.stat().st_size
        shards = shard_reads(tmp / "shard-store")
    utterances = a.utterances
    report(
        {
            "bench": "scale",
            "utterances": utterances,
            "speakers": a.speakers,
            "hours": round(hours, 1),
            "build_s": round(built, 1),
            "index_cold_s": round(cold, 1),
            "index_warm_s": round(warm, 1),
            "snapshot_write_s": round(saved, 1),
            "snapshot_mb": round(snapshot_bytes / 1e6, 1),
            "producer_ready_s": round(ready, 1),
            "producer_rss_mb": round(producer_mb, 1),
            "listing_rss_mb": round(listing_mb, 1),
            "listing_bytes_per_utterance": round(listing_mb * 2**20 / utterances),
            "cache_files_feature": utterances,
            "cache_files_speech": utterances,
            "cache_files_in_1000_shards": 2 * -(-utterances // 1000),  # data + index each
            **shards,
            "cache_gb_feature": round(feat_bytes / seconds * hours * 3600 / 1e9, 1),
            "cache_gb_speech": round(wave_bytes / seconds * hours * 3600 / 1e9, 1),
        }
    )


if __name__ == "__main__":
    main()
