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
