"""The cache in shards (workers.shards, workers.precompute --shards): written, killed mid-write
and resumed, read back equal to a file per utterance, and a changed file not found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cluster.config import FeatureConfig
from tests.fakes import write_wav
from workers.cache import CachedSource, FeatureStore
from workers.corpus import SpeakerDatabase
from workers.extract import LogMelExtractor
from workers.precompute import extract_chunk
from workers.shards import ShardIndex, write_shard

ROOT = Path(__file__).resolve().parents[2]


def corpus(tmp_path, speakers=3, each=4) -> SpeakerDatabase:
    for s in range(speakers):
        for u in range(each):
            write_wav(tmp_path / "c" / f"spk{s}" / f"u{u}.wav", 1.0 + 0.2 * u, f0=110 + 40 * s)
    (tmp_path / "c" / "spk0" / "silent.wav").write_bytes(b"RIFF")  # unusable: rejected
    return SpeakerDatabase.scan(tmp_path / "c", cache_dir=str(tmp_path / "cache"))


def test_shards_read_back_what_a_file_each_holds(tmp_path):
    db = corpus(tmp_path)
    cfg = FeatureConfig()
    files, sharded = tmp_path / "files", tmp_path / "sharded"
    utts = list(db.utterances)
    extract_chunk(str(db.root), db.layout, utts, str(files), cfg.__dict__)
    for part in (utts[:5], utts[5:]):  # two shards
        extract_chunk(str(db.root), db.layout, part, str(sharded), cfg.__dict__, shard=True)
    assert len(list((sharded / "shards").glob("*.json"))) == 2
    assert not list(sharded.glob("*.npy"))  # nothing as a file each
    a, b = FeatureStore(files), FeatureStore(sharded)
    assert len(b.shards) == len(utts)
    for utt in utts:
        assert a.status(utt) == b.status(utt)
        if a.status(utt) == "done":
            np.testing.assert_array_equal(a.load(utt), b.load(utt))
        else:
            assert b.rejection(utt) == a.rejection(utt)
    # the producers' path: the cache's arrays, not extracted again
    source = CachedSource(db, LogMelExtractor(cfg), b, write_cache=False)
    i = next(k for k, u in enumerate(utts) if b.status(u) == "done")
    np.testing.assert_array_equal(source.get(i), a.load(utts[i]))
    assert source.computed == 0


def test_a_changed_file_is_not_found_in_its_shard(tmp_path):
    """The shard is keyed with the content key: a file edited after it was written (its
    size and mtime restored) is extracted again, not read stale."""
    db = corpus(tmp_path)
    root = tmp_path / "sharded"
    extract_chunk(str(db.root), db.layout, list(db.utterances), str(root), {}, shard=True)
    target = db.root / "spk1" / "u2.wav"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = bytes(4000)
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = SpeakerDatabase.scan(db.root, cache_dir=str(tmp_path / "cache"))
    store = FeatureStore(root)
    changed = next(u for u in again.utterances if u.path == "spk1/u2.wav")
    assert store.status(changed) is None
    assert all(store.status(u) for u in again.utterances if u.path != "spk1/u2.wav")


WRITER = """
import sys, time, numpy as np
from workers.shards import write_shard
entries = [(f"k{i:05d}", np.full((400, 64), i, "float16")) for i in range(2000)]
class Slow(list):
    def __iter__(self):
        for e in super().__iter__():
            time.sleep(0.002)
            yield e
print("writing", flush=True)
write_shard(sys.argv[1], "big", Slow(entries))
"""


def test_a_writer_killed_mid_shard_leaves_no_shard_and_a_rerun_completes_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    folder = tmp_path / "shards"
    deadline = time.time() + 30
    while time.time() < deadline and not any(folder.glob(".big.bin.*.tmp")):
        time.sleep(0.01)
    time.sleep(0.3)  # part way through its 2,000 entries
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(folder.glob(".big.bin.*.tmp"))  # it was writing
    assert ShardIndex.open(tmp_path) is None  # but no shard exists: no index was renamed
    write_shard(
        tmp_path, "big", [(f"k{i:05d}", np.full((400, 64), i, "float16")) for i in range(2000)]
    )
    assert not list(folder.glob("*.tmp"))  # the killed writer's files are gone
    index = ShardIndex.open(tmp_path)
    assert len(index) == 2000 and index.get("k01234")[0, 0] == 1234
    assert index.get("nope") is None
