"""The feature cache: round trip, keyed by file version, a cache that cannot be written."""

import numpy as np
import pytest

from cluster.config import FeatureConfig
from tests.fakes import write_wav
from workers.batches import BatchBuilder
from workers.cache import CachedSource, FeatureStore
from workers.corpus import SpeakerDatabase
from workers.extract import LogMelExtractor
from workers.sampler import TripletSampler


def test_feature_cache_roundtrip(tone_corpus, tmp_path):
    db = SpeakerDatabase.scan(tone_corpus)
    cfg = FeatureConfig()
    store = FeatureStore(tmp_path / "store")
    fresh = CachedSource(db, LogMelExtractor(cfg), store, write_cache=True)
    a = np.array(fresh.get(0))
    assert store.status(db.utterances[0]) == "done" and fresh.computed == 1
    reader = CachedSource(db, LogMelExtractor(cfg), store)
    b = reader.get(0)
    assert isinstance(b, np.memmap) and reader.computed == 0
    np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "store").glob(".*tmp*"))


def test_feature_cache_follows_the_file_not_its_name(tmp_path):
    """A file replaced by other audio is extracted again; a file rejected once and then
    repaired is used again (the cache is keyed by path, size and mtime)."""
    import os

    import soundfile as sf

    from workers.audio import AudioError

    corpus, store = tmp_path / "c", FeatureStore(tmp_path / "store")
    for s in range(2):
        for u in range(2):
            write_wav(corpus / f"s{s}" / f"u{u}.wav", 1.0, f0=120 + 80 * s)
    sf.write(corpus / "s1" / "u1.wav", np.zeros(16000, np.float32), 16000)  # silent
    cfg = FeatureConfig()

    def source():
        db = SpeakerDatabase.scan(corpus, cache_dir=str(tmp_path))
        src = CachedSource(db, LogMelExtractor(cfg), store, write_cache=True)
        return db, src, {u.path: i for i, u in enumerate(db.utterances)}

    db, src, at = source()
    before = np.array(src.get(at["s0/u0.wav"]))
    with pytest.raises(AudioError):
        src.get(at["s1/u1.wav"])
    assert store.status(db.utterances[at["s1/u1.wav"]]) == "rejected"

    write_wav(corpus / "s0" / "u0.wav", 1.3, f0=300)  # other audio under the same name
    write_wav(corpus / "s1" / "u1.wav", 1.0, f0=200)  # the silent file repaired
    for name in ("s0/u0.wav", "s1/u1.wav"):  # a different mtime even on a coarse clock
        os.utime(corpus / name, ns=(1_700_000_000_000_000_000,) * 2)
    db, src, at = source()
    after = np.array(src.get(at["s0/u0.wav"]))
    assert src.computed == 1 and after.shape != before.shape
    repaired = src.get(at["s1/u1.wav"])
    assert src.computed == 2 and len(repaired) > 0
    assert store.status(db.utterances[at["s1/u1.wav"]]) == "done"


def test_a_cache_that_cannot_be_written_costs_speed_not_the_run(tone_corpus, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    db = SpeakerDatabase.scan(tone_corpus)
    cfg = FeatureConfig()
    source = CachedSource(db, LogMelExtractor(cfg), FeatureStore(blocker / "store"), True)
    builder = BatchBuilder(TripletSampler(db, triplets=4, seed=0), source, 40, cfg)
    for _ in range(3):
        builder.build().validate()
    assert source.computed > 0 and not source.write_cache
    assert caplog.text.count("cannot write the feature cache") == 1


def edited_in_place(tmp_path, seconds: float):
    """A corpus of 2 speakers x 2 files, the file it will edit, and a function that scans
    the corpus and returns that file's features through the cache (written as it goes)."""
    corpus, store = tmp_path / "c", FeatureStore(tmp_path / "store")
    for s in range(2):
        for u in range(2):
            write_wav(corpus / f"s{s}" / f"u{u}.wav", seconds, f0=120 + 80 * s)
    target = corpus / "s0" / "u0.wav"

    def features() -> np.ndarray:
        db = SpeakerDatabase.scan(corpus, cache_dir=str(tmp_path))
        src = CachedSource(db, LogMelExtractor(FeatureConfig()), store, write_cache=True)
        return np.array(
            src.get(next(i for i, u in enumerate(db.utterances) if u.path == "s0/u0.wav"))
        )

    return target, features


def test_other_audio_with_the_same_size_and_a_restored_mtime_is_extracted_again(tmp_path):
    """``rsync -t`` or ``tar`` can put other audio of the same size under a name with the old
    mtime: the content check in the manifest and the cache key still tells them apart."""
    import os

    target, features = edited_in_place(tmp_path, 1.0)
    stat = target.stat()
    before = features()
    write_wav(target, 1.0, f0=310)  # other audio, the same length: the same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns
    after = features()
    assert before.shape == after.shape and not np.array_equal(before, after)
    np.testing.assert_array_equal(after, LogMelExtractor(FeatureConfig())(target, 1.0))


def test_an_edit_in_the_middle_of_a_file_with_its_mtime_restored_is_extracted_again(tmp_path):
    """The content key used to cover size, mtime and the first and last 4 KiB: samples
    rewritten between them, with the mtime restored, kept their old features. The scan
    now hashes the whole file whenever its inode status changed (ctime, which no tool can
    restore), so the edit gets a new key."""
    import os

    target, features = edited_in_place(tmp_path, 3.0)
    stat = target.stat()
    before = features()
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16384] = bytes(16384)  # 0.5 s of silence, far from both ends
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns
    after = features()
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, LogMelExtractor(FeatureConfig())(target, 1.0))
