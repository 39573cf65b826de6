"""Inference throughput: utterances embedded per second on one core, 3 s and 10 s utterances,
end to end (decode, VAD, log-mel, model), for the demo and base models (untrained weights:
speed does not depend on them), with Keras and with ONNX Runtime (the same utterances, one
run), and each runtime's first-call latency (load the model, embed one utterance).

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
os.environ["VE_ONNX_THREADS"] = "1"  # one core for ONNX Runtime, as for TensorFlow
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from bench.common import SHARED_SPEECH, one_core, report  # noqa: E402
from bench.features import segments  # noqa: E402


def checkpoint_for(preset: str, root: Path) -> Path:
    from cluster.config import load_config
    from learner.learner import Learner

    # The network alone matters here: no classifier head (base trains one), no augmentation.
    cfg = load_config(preset, [f"data.path={SHARED_SPEECH}", "learner.loss=triplet"])
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
    import onnxruntime as ort

    from learner.commands.export import export
    from learner.inference.speaker_model import SpeakerModel

    ort.set_default_logger_severity(3)

    figures: dict = {"bench": "inference", "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seconds in (3, 10):
            for i, seg in enumerate(segments(a.n, seconds=seconds)):
                sf.write(tmp / f"{seconds}s_{i}.wav", seg, 16000)
        for preset in ("demo", "base"):
            ckpt = checkpoint_for(preset, tmp)
            export(SpeakerModel.load(ckpt), tmp / f"{preset}-onnx", ("onnx",))
            sources = {"keras": ckpt, "onnx": tmp / f"{preset}-onnx"}
            for runtime, source in sources.items():
                t0 = time.perf_counter()
                model = SpeakerModel.load(source, runtime=runtime)
                model.embed_file(sorted(tmp.glob("3s_*.wav"))[0])
                figures[f"{preset}_{runtime}_first_call_s"] = round(time.perf_counter() - t0, 3)
                for seconds in (3, 10):
                    paths = sorted(tmp.glob(f"{seconds}s_*.wav"))
                    model.embed_file(paths[0])  # warm up
                    t0 = time.perf_counter()
                    for path in paths:
                        model.embed_file(path)
                    rate = len(paths) / (time.perf_counter() - t0)
                    key = f"{preset}_{runtime}_{seconds}s"
                    figures[f"{key}_utterances_per_s"] = round(rate, 2)
                    figures[f"{key}_realtime_factor"] = round(rate * seconds, 1)
            for seconds in (3, 10):
                k, o = (figures[f"{preset}_{r}_{seconds}s_utterances_per_s"] for r in sources)
                figures[f"{preset}_{seconds}s_onnx_over_keras"] = round(o / k, 2)
    figures["np"] = np.__version__
    report(figures)


if __name__ == "__main__":
    main()
