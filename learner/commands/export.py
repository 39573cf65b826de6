"""Export a checkpoint as models that load without this project's code.

Examples:
    python -m learner.export -c runs/20261124-073721-3f9a -o exported/

Writes OUT/model.keras (Keras 3: ``keras.saving.load_model``), OUT/saved_model/
(TensorFlow SavedModel with a ``serve`` signature: ``tf.saved_model.load``) and
OUT/frontend.json, the feature settings the model expects: log-mel in dB from
16 kHz audio with silence removed (see docs/pipeline.md), shaped
[batch, frames, n_mels]; the model normalises each segment itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from learner.commands.cli import guarded, load_model, parser
from learner.commands.speaker_model import SpeakerModel


def export(model: SpeakerModel, out: str | Path) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keras_path = out / "model.keras"
    model.model.save(keras_path)
    saved = out / "saved_model"
    model.model.export(str(saved), format="tf_saved_model", verbose=False)
    c = model.cfg.features
    (out / "frontend.json").write_text(
        json.dumps(
            {
                "sample_rate": c.sample_rate,
                "n_mels": c.n_mels,
                "win_length": c.win_length,
                "hop_length": c.hop_length,
                "n_fft": c.n_fft,
                "fmin": c.fmin,
                "fmax": c.fmax,
                "log": "10*log10(max(mel_power, 1e-10))",
                "mel": "slaney scale and norm (librosa default)",
                "window": "periodic hann of win_length, no centre padding",
                "vad": {"relative_db": c.vad_db, "floor_db": c.vad_floor_db},
                "segment_frames": model.cfg.sampler.frames,
                "feature_spec": c.fingerprint(),
                "threshold": model.threshold,
                "checkpoint": str(model.checkpoint.path),
            },
            indent=1,
        )
    )
    return {"keras": str(keras_path), "saved_model": str(saved)}


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.export", __doc__)
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)

    def body() -> int:
        paths = export(load_model(a), a.out)
        print(f"wrote {paths['keras']} and {paths['saved_model']}")
        return 0

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
