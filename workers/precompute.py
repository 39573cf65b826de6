"""Extract every utterance's log-mel features once, in parallel over Ray, into the feature cache
(or its decoded speech into the waveform cache that producers read when they augment
audio: with ``--waves``, and by default when the preset augments, as demo and base do).

Resumable (files already done or already rejected are skipped) and safe to
kill (each entry is written under a temporary name and renamed into place).
Producers use the cache as soon as it exists.

Examples:
    python -m workers.precompute --data ~/LibriSpeech/train-clean-100
    python -m workers.precompute --data /corpora/vox1 --set features.dtype=float32
    python -m workers.precompute --data /corpora/vox1 --address auto   # on a Ray cluster
    python -m workers.precompute --data /corpora/vox2 --waves          # for augmentation
    python -m workers.precompute --data /corpora/vox2 --shards 1000    # ~1,100 files, not 1.1M

With ``--shards N`` each Ray task writes its N utterances as one shard (``workers/shards.py``:
the bytes, then the index renamed into place last), so a killed run leaves whole shards
and temporary files only, and running it again extracts what no shard holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from cluster.config import ConfigError, FeatureConfig, load_config
from cluster.ray_session import init_ray
from workers.audio import AudioError
from workers.cache import FeatureStore
from workers.corpus import CorpusError, SpeakerDatabase, Utterance
from workers.extract import Extractor, LogMelExtractor, SpeechExtractor
from workers.rundata import RunData
from workers.shards import write_shard

log = logging.getLogger(__name__)


def extract_chunk(
    root: str,
    layout: str,
    utts: list[Utterance],
    store_root: str,
    features: dict[str, Any],
    waves: bool = False,
    shard: bool = False,
) -> dict[str, int]:
    """Extract ``utts`` (paths relative to ``root``) into the store: log-mel features, or with
    ``waves`` the int16 speech; counts by outcome. ``shard``: the chunk becomes one shard
    (:mod:`workers.shards`), written whole or not at all, instead of a file per utterance."""
    extractor = extractor_of(FeatureConfig(**features), waves)
    db = SpeakerDatabase(Path(root), layout, utts)
    store = FeatureStore(store_root)
    counts: dict[str, int] = {"done": 0}
    entries: list[tuple[str, Any]] = []
    for i, utt in enumerate(db.utterances):
        # ``precompute`` hands out only what no shard or file holds; this check is for a
        # retried task, so it looks at the files it writes, never parsing every shard index
        # (a shard-writing task that is retried writes the same shard again, same name).
        if not shard and (store.npy(utt).exists() or store.rej(utt).exists()):
            counts["done"] += 1
            continue
        try:
            value: Any = extractor(db.abspath(i), utt.seconds)
            counts["done"] += 1
        except AudioError as exc:
            log.warning("skipping %s", exc)
            value = exc.reason
            counts[exc.reason] = counts.get(exc.reason, 0) + 1
        if shard:
            entries.append((store.key(utt), value))
        elif isinstance(value, str):
            store.reject(utt, value)
        else:
            store.save(utt, value)
    if entries:
        name = hashlib.sha1("".join(k for k, _ in entries).encode()).hexdigest()[:16]
        write_shard(store.root, name, entries)
    return counts


def extractor_of(cfg: FeatureConfig, waves: bool) -> Extractor:
    """What precompute extracts: log-mel features, or with ``waves`` the speech waveforms."""
    return SpeechExtractor(cfg) if waves else LogMelExtractor(cfg)


def target_store(corpus: Path, cfg: FeatureConfig, cache_dir: str, waves: bool) -> FeatureStore:
    """The cache precompute fills."""
    return FeatureStore.of(corpus, extractor_of(cfg, waves), cache_dir)


def precompute(
    db: SpeakerDatabase,
    cfg: FeatureConfig,
    cache_dir: str = "",
    chunk: int = 32,
    progress: bool = True,
    waves: bool = False,
    shards: int = 0,
) -> dict[str, int]:
    """Fill the cache for ``db`` (the waveform cache with ``waves``) using the connected Ray
    cluster; returns outcome counts. ``shards``: utterances per shard (0: a file each)."""
    chunk = shards or chunk
    store = target_store(db.root, cfg, cache_dir, waves)
    todo = [u for u in db.utterances if store.status(u) is None]
    totals = {"already": len(db.utterances) - len(todo), "done": 0}
    if not todo:
        return totals
    task = ray.remote(num_cpus=1, max_retries=3)(extract_chunk)
    pending = {
        task.remote(
            str(db.root),
            db.layout,
            todo[i : i + chunk],
            str(store.root),
            dataclasses.asdict(cfg),
            waves,
            bool(shards),
        ): len(todo[i : i + chunk])
        for i in range(0, len(todo), chunk)
    }
    desc = "speech" if waves else "features"
    with tqdm(total=len(todo), unit="utt", desc=desc, disable=not progress) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                bar.update(pending.pop(ref))
                for k, v in ray.get(ref).items():
                    totals[k] = totals.get(k, 0) + v
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workers.precompute",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="corpus root (any supported layout)")
    p.add_argument(
        "--preset", default="small", help="preset whose feature settings to use (as training's)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. features.dtype=float32",
    )
    p.add_argument(
        "--waves",
        action="store_true",
        help="fill the speech waveform cache (what producers read with augment.enabled=true) "
        "instead of the feature cache; the default when the preset augments (demo, base)",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="write the cache in shards of N utterances (a file each by default); for "
        "corpora of hundreds of thousands of files: VoxCeleb2 in 1,000-utterance shards is "
        "about 1,100 files instead of 1.1 million",
    )
    p.add_argument("--cache-dir", default="", help="cache root (default ~/.cache/voice-embeddings)")
    p.add_argument("--address", default=None, help="Ray address ('auto' to join a cluster)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for a local Ray instance")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        cfg = load_config(
            a.preset, [*a.set, f"data.path={a.data}", f"data.cache_dir={a.cache_dir}"]
        )
        db = RunData.open(cfg.data, cfg.synthetic).db
    except (ConfigError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(db.summary(), file=sys.stderr)
    waves = a.waves or cfg.augment.enabled  # what this preset's producers will read
    init_ray(a.address, num_cpus=a.cpus)
    t0 = time.time()
    totals = precompute(db, cfg.features, a.cache_dir, waves=waves, shards=a.shards)
    store = target_store(db.root, cfg.features, a.cache_dir, waves)
    print(
        f"{'speech' if waves else 'features'} for {len(db.utterances)} utterances in "
        f"{store.root} "
        f"({time.time() - t0:.1f} s): {totals}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
