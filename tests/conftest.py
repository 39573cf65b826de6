"""Shared fixtures: an isolated cache, small corpora on disk, the real speech set, one Ray per module."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import write_wav

SHARED_SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every cache (manifests, features, synthetic corpora) under a per-session folder."""
    root = tmp_path_factory.mktemp("ve-cache")
    os.environ["VE_CACHE_DIR"] = str(root)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return root


@pytest.fixture(scope="session")
def speech_root() -> Path:
    if not (SHARED_SPEECH / "README.md").exists():
        pytest.fail(f"the shared speech set is missing at {SHARED_SPEECH}")
    return SHARED_SPEECH


@pytest.fixture(scope="session")
def speech_subset(tmp_path_factory, speech_root) -> Path:
    """A flat corpus of symlinks to real speakers with several separate recordings."""
    out = tmp_path_factory.mktemp("speech-subset")
    names = [
        "fsdd_jackson",
        "fsdd_nicolas",
        "fsdd_yweweler",
        "remy_philippe",
        "arctic_aew",
        "arctic_axb",
        "libri_103",
        "libri_1034",
        "libri_1040",
        "libri_1069",
    ]
    for name in names:
        (out / name).mkdir()
        for f in sorted((speech_root / name).glob("*.wav"))[:6]:
            (out / name / f.name).symlink_to(f)
    return out


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
