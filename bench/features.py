"""Log-mel throughput: ours vs librosa on the same 4-second segments, one core, one run.

python bench/features.py [--segments 200]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import SHARED_SPEECH, median, one_core, report, timeit  # noqa: E402
from cluster.config import FeatureConfig  # noqa: E402
from workers.audio import load_audio  # noqa: E402
from workers.features import LogMel, librosa_logmel  # noqa: E402


def segments(n: int, sr: int = 16000, seconds: float = 4.0) -> list[np.ndarray]:
    """4 s segments of real speech (concatenated utterances of the shared set)."""
    files = sorted(SHARED_SPEECH.glob("*/*.wav"))[:200]
    audio = np.concatenate([load_audio(f) for f in files])
    step = int(seconds * sr)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(audio) - step, size=n)
    return [np.ascontiguousarray(audio[s : s + step]) for s in starts]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--segments", type=int, default=200)
    a = p.parse_args()
    one_core()
    import librosa

    cfg = FeatureConfig()
    segs = segments(a.segments)
    ours = LogMel(cfg)

    def run_ours():
        for s in segs:
            ours(s)

    def run_librosa():
        for s in segs:
            librosa_logmel(s, cfg)

    t_ours = median(timeit(run_ours, repeat=5))
    t_lib = median(timeit(run_librosa, repeat=5))
    n = len(segs)
    report(
        {
            "bench": "features",
            "segments": n,
            "segment_seconds": 4.0,
            "ours_segments_per_s": round(n / t_ours, 1),
            "librosa_segments_per_s": round(n / t_lib, 1),
            "ours_ms_per_segment": round(1000 * t_ours / n, 3),
            "librosa_ms_per_segment": round(1000 * t_lib / n, 3),
            "speedup_vs_librosa": round(t_lib / t_ours, 2),
            "realtime_factor_ours": round(4.0 * n / t_ours, 1),
            "librosa_version": librosa.__version__,
        }
    )


if __name__ == "__main__":
    main()
