"""The classical baseline every evaluation report shows beside the model: mean and standard
deviation of 20 MFCCs over the speech frames, scored by cosine. No training, so it says how
far the trained model is above the simplest thing that works.

    v = mfcc_embedding("a.wav", cfg.features)    # unit vector [40]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cluster.config import FeatureConfig
from workers.audio import load_speech


def mfcc_embedding(path: Path, feature_cfg: FeatureConfig) -> np.ndarray:
    import librosa

    y = load_speech(path, feature_cfg)
    m = librosa.feature.mfcc(
        y=y,
        sr=feature_cfg.sample_rate,
        n_mfcc=20,
        n_fft=feature_cfg.n_fft,
        hop_length=feature_cfg.hop_length,
        win_length=feature_cfg.win_length,
    )
    v = np.concatenate([m.mean(axis=1), m.std(axis=1)])
    v = (v - v.mean()) / (v.std() + 1e-9)
    return v / np.linalg.norm(v)
