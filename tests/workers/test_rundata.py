"""A run's data, opened in one place: the split every side agrees on, and the feature cache
used as ``data.feature_cache`` says, by the producers and by the learner's held-out evaluation."""

from __future__ import annotations

import queue

import pytest

from cluster.config import load_config
from learner.actor import build_learner
from tests.fakes import write_wav
from workers.producer import BatchProducer
from workers.rundata import RunData


@pytest.fixture()
def corpus(tmp_path):
    for s in range(6):
        for u in range(3):
            write_wav(tmp_path / "corpus" / f"spk{s}" / f"u{u}.wav", 1.0, f0=100 + 30 * s)
    return tmp_path / "corpus"


def run_cfg(corpus, cache, mode: str):
    return load_config(
        "smoke",
        [
            f"data.path={corpus}",
            f"data.cache_dir={cache}",
            f"data.feature_cache={mode}",
            "data.eval_fraction=0.34",
        ],
    )


def cached_files(cfg, data: RunData) -> int:
    root = data.store(cfg.features).root
    return len(list(root.glob("*.npy"))) if root.is_dir() else 0


def test_one_split_for_every_side(corpus, tmp_path):
    cfg = run_cfg(corpus, tmp_path / "cache", "readwrite")
    data = RunData.open(cfg.data, cfg.synthetic)
    assert len(data.held) == 2 and not set(data.held) & set(data.train)
    assert sorted(data.held + data.train) == data.db.speakers
    producer = BatchProducer.from_config(cfg, 0, queue.Queue())
    assert sorted(producer.sampler.pool) == sorted(data.train)  # never a held-out speaker
    learner = build_learner(cfg, None, "cpu")
    held_speakers = {u.speaker for u in learner.evaluator.db.utterances}
    assert held_speakers == set(data.held)


@pytest.mark.parametrize(("mode", "writes"), [("readwrite", True), ("read", False), ("off", False)])
def test_held_out_evaluation_follows_feature_cache_mode(corpus, tmp_path, mode, writes):
    cfg = run_cfg(corpus, tmp_path / "cache", mode)
    data = RunData.open(cfg.data, cfg.synthetic)
    learner = build_learner(cfg, None, "cpu")
    assert len(learner.evaluator.features) == 6  # every held-out utterance was computed
    n = cached_files(cfg, data)
    assert (n == 6) if writes else (n == 0), f"{mode}: {n} feature files written"
    source = data.source(cfg.features)
    assert (source.store is None) == (mode == "off")


def test_read_mode_uses_what_the_cache_has(corpus, tmp_path):
    cache = tmp_path / "cache"
    build_learner(run_cfg(corpus, cache, "readwrite"), None, "cpu")  # fills the held-out part
    cfg = run_cfg(corpus, cache, "read")
    data = RunData.open(cfg.data, cfg.synthetic)
    _, source = data.held_out(cfg.features)
    for i in range(len(source.db.utterances)):
        source.get(i)
    assert source.computed == 0  # all read from the cache, none recomputed


def test_a_corpus_of_100000_utterances_indexes_and_a_producer_starts_from_the_snapshot(
    tmp_path, speech_subset
):
    """100,000 utterances (links into the real fixture, VoxCeleb's layout): the scan lists
    them in columns, the driver's snapshot loads back equal, and a producer's data (split,
    sampler, a batch's draw) comes from the snapshot without a scan. The timing lives in
    bench/scale.py; here, what each utterance costs in memory."""
    import os

    from cluster.config import replace
    from workers.sampler import TripletSampler

    sources = sorted(speech_subset.rglob("*.flac"))
    root = tmp_path / "vox" / "wav"
    for k in range(100_000):
        folder = root / f"id{k % 500:05d}" / f"video{(k // 500) % 20:04d}"
        if k < 500 * 20:
            folder.mkdir(parents=True, exist_ok=True)
        os.symlink(sources[k % len(sources)], folder / f"{k:05d}.flac")
    cfg = load_config(
        "smoke",
        [
            f"data.path={tmp_path / 'vox'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.layout=voxceleb",
        ],
    )
    data = RunData.open(cfg.data, cfg.synthetic)
    table = data.db.utterances
    assert len(table) == 100_000 and len(data.db.speakers) == 500
    per_utterance = sum(col.nbytes for col in table.cols.values()) / len(table)
    assert per_utterance < 200, per_utterance  # an object each took about 1,400 bytes
    data.db.save(tmp_path / "corpus.npz")
    producer_cfg = replace(cfg, data={"snapshot": str(tmp_path / "corpus.npz")})
    again = RunData.open(producer_cfg.data, producer_cfg.synthetic)
    assert again.db.utterances == table and (again.train, again.held) == (data.train, data.held)
    idx, labels = TripletSampler(again.db, again.train, 8, seed=0).sample()
    assert len(idx) == 24 and all(again.db.utterances[int(i)].speaker in again.train for i in idx)
