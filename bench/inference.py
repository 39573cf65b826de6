"""Inference throughput: utterances embedded per second on one core, 3 s and 10 s utterances,
end to end (decode, VAD, log-mel, model), for the demo and base models (untrained weights:
speed does not depend on them).

    python bench/inference.py [--n 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from bench.common import SHARED_SPEECH, one_core, report  # noqa: E402
from bench.features import segments  # noqa: E402


def checkpoint_for(preset: str, root: Path) -> Path:
    from cluster.config import load_config
    from learner.learner import Learner

    cfg = load_config(preset, [f"data.path={SHARED_SPEECH}"])
    learner = Learner(cfg, root / preset)
    learner.threshold = 0.5
    return learner.save("bench").path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20)
    a = p.parse_args()
    one_core()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from learner.commands.speaker_model import SpeakerModel

    figures: dict = {"bench": "inference", "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seconds in (3, 10):
            for i, seg in enumerate(segments(a.n, seconds=seconds)):
                sf.write(tmp / f"{seconds}s_{i}.wav", seg, 16000)
        for preset in ("demo", "base"):
            model = SpeakerModel.load(checkpoint_for(preset, tmp))
            for seconds in (3, 10):
                paths = sorted(tmp.glob(f"{seconds}s_*.wav"))
                model.embed_file(paths[0])  # warm up
                t0 = time.perf_counter()
                for path in paths:
                    model.embed_file(path)
                rate = len(paths) / (time.perf_counter() - t0)
                figures[f"{preset}_{seconds}s_utterances_per_s"] = round(rate, 2)
                figures[f"{preset}_{seconds}s_realtime_factor"] = round(rate * seconds, 1)
    figures["np"] = np.__version__
    report(figures)


if __name__ == "__main__":
    main()
