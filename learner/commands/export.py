"""Export a checkpoint as models that load without this project's code.

Examples:
    python -m learner.export -c runs/20261124-073721-3f9a -o exported/   # Keras, SavedModel
    python -m learner.export -c runs/20261124-073721-3f9a -o onnx/ --format onnx
    python -m learner.verify a.wav b.wav -c onnx/       # the commands run an ONNX export
                                                        # with ONNX Runtime, no TensorFlow

Formats (``--format``, comma-separated; default keras,savedmodel):

- ``keras``: OUT/model.keras (Keras 3: ``keras.saving.load_model``);
- ``savedmodel``: OUT/saved_model/ (TensorFlow SavedModel, ``serve`` signature:
  ``tf.saved_model.load``);
- ``onnx``: OUT/model.onnx (ONNX opset of Keras's tf2onnx export; input ``logmel``
  [batch, frames, n_mels] with batch and frames dynamic, output the unit embeddings), for
  ONNX Runtime, TensorRT or OpenVINO. Embeddings equal Keras's within 1e-4 (tested).

Always OUT/frontend.json: the feature settings the model expects (log-mel in dB from
16 kHz audio with silence removed, see docs/pipeline.md; the model normalises each
segment itself), the threshold, the weights' fingerprint and the run's config, which
the inference commands read to run an ONNX model with the same front end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from learner.commands.cli import guarded, load_model, parser
from learner.inference.speaker_model import SpeakerModel, frontend_fields

FORMATS = ("keras", "savedmodel", "onnx")


def export(
    model: SpeakerModel, out: str | Path, formats: tuple[str, ...] = ("keras", "savedmodel")
) -> dict[str, str]:
    if model.runtime != "keras":
        raise ValueError("export reads a checkpoint (a run or checkpoint folder), not an export")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    if "keras" in formats:
        paths["keras"] = str(out / "model.keras")
        model.model.save(paths["keras"])
    if "savedmodel" in formats:
        paths["savedmodel"] = str(out / "saved_model")
        model.model.export(paths["savedmodel"], format="tf_saved_model", verbose=False)
    if "onnx" in formats:
        paths["onnx"] = str(out / "model.onnx")
        # Keras traces a model for ONNX only once it has been called.
        model.model(np.zeros((1, model.cfg.sampler.frames, model.cfg.features.n_mels), "float32"))
        model.model.export(paths["onnx"], format="onnx", verbose=False)
    c = model.cfg.features
    if model.cohort is not None:  # AS-norm with the export, as with the checkpoint
        np.save(out / "cohort.npy", model.cohort)
    if model.domain is not None:  # learner.adapt's domain, applied by the ONNX runtime too
        model.domain.write(out)
    (out / "frontend.json").write_text(
        json.dumps(
            {
                **frontend_fields(model.cfg),  # what the inference commands check on load
                "log": "10*log10(max(mel_power, 1e-10))",
                "mel": "slaney scale and norm (librosa default)",
                "window": "periodic hann of win_length, no centre padding",
                "vad": {"relative_db": c.vad_db, "floor_db": c.vad_floor_db},
                "feature_spec": c.fingerprint(),
                "threshold": model.threshold,
                "calibration": {k: v.as_dict() for k, v in model.calibrations.items()},
                "fingerprint": model.weights_id,
                "checkpoint": str(model.source),
                "config": model.cfg.to_dict(),
            },
            indent=1,
        )
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.export", __doc__, quality=False)
    p.add_argument("-o", "--out", required=True)
    p.add_argument(
        "--format",
        default="keras,savedmodel",
        help=f"comma-separated, of {', '.join(FORMATS)} (default keras,savedmodel)",
    )
    a = p.parse_args(argv)
    formats = tuple(f.strip() for f in a.format.split(",") if f.strip())
    if not formats or any(f not in FORMATS for f in formats):
        p.error(f"--format: comma-separated names of {', '.join(FORMATS)}")

    def body() -> int:
        paths = export(load_model(a), a.out, formats)
        print(f"wrote {', '.join(paths.values())} and {Path(a.out) / 'frontend.json'}")
        return 0

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
