"""Embeddings from a checkpoint, with exactly the feature extraction used in training.

    speaker = SpeakerModel.load("runs/20261124-073721-3f9a")     # best checkpoint of a run
    speaker = SpeakerModel.load("exported/model.onnx")           # ONNX Runtime, no TensorFlow
    a, b = speaker.embed_file("a.wav"), speaker.embed_file("b.wav")
    score = float(a @ b)                                          # cosine: unit vectors
    same = score >= speaker.threshold

Audio goes through ``speech_parts`` (decode, mono, 16 kHz, VAD; long files in blocks)
and ``LogMel`` from ``workers``; a whole utterance is embedded as the normalised mean over
half-overlapping windows of the training segment length. Silence, noise, a tone or
music, or less than ``limits.min_speech_s`` of speech after VAD, raises ``NotSpeech``
(``workers.quality``) instead of producing an embedding: what is not speech must never
look like a confident match.

Two runtimes run the network: Keras (a checkpoint) or ONNX Runtime (an ``.onnx`` file
written by ``python -m learner.export --format onnx``, with its ``frontend.json`` beside
it, which holds the run's config): the front end is the same NumPy code either way, and
the ONNX path imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import RunConfig, config_from_dict
from learner.checkpoint import Checkpoint, CheckpointError, assign_arrays, resolve
from learner.inference.domain import Domain
from learner.scoring.calibration import Calibration
from learner.scoring.scores import as_norm
from learner.scoring.windows import embed_features
from workers.audio import AUDIO_EXTENSIONS, AudioError, audio_info
from workers.extract import speech_parts
from workers.features import LogMel
from workers.quality import Quality, QualityLimits, QualityMeter

log = logging.getLogger(__name__)
# Speech embedded per input, at most: a long recording is read block by block and stops
# here, so memory is bounded whatever the input's length (--max-speech).
MAX_SPEECH_S = 300.0


RUNTIMES = ("auto", "keras", "onnx")


def onnx_file(path: str | Path) -> Path | None:
    """The ONNX model ``path`` names: an ``.onnx`` file, or an export folder holding
    ``model.onnx``; None for anything else (a checkpoint or run folder)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return p
    return p / "model.onnx" if (p / "model.onnx").is_file() else None


@dataclass
class SpeakerModel:
    cfg: RunConfig
    model: Any  # keras.Model, or an onnxruntime.InferenceSession
    checkpoint: Checkpoint | None  # None for an ONNX model
    threshold: float | None
    limits: QualityLimits = QualityLimits()
    max_speech_s: float = MAX_SPEECH_S
    runtime: str = "keras"
    source: Path | None = None  # what was loaded: the checkpoint folder or the .onnx file
    weights_fingerprint: str = ""  # an ONNX export's, recorded from its checkpoint
    calibrations: dict[str, Calibration] = dataclasses.field(default_factory=dict)
    cohort: np.ndarray | None = None  # training-speaker embeddings for AS-norm
    # Stored by python -m learner.adapt: the domain's mean is removed from every embedding,
    # its cohort and calibrations replace the run's (learner.inference.domain).
    domain: Domain | None = None

    @classmethod
    def load(
        cls, path: str | Path, max_speech_s: float = MAX_SPEECH_S, runtime: str = "auto"
    ) -> SpeakerModel:
        """A checkpoint folder, a run / checkpoints folder (its best checkpoint), or an ONNX
        export (``.onnx`` or its folder). ``runtime``: ``auto`` (ONNX Runtime for an ONNX
        export, Keras otherwise), ``keras`` or ``onnx``."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
        found = onnx_file(path)
        if runtime == "onnx" and found is None:
            raise CheckpointError(
                f"{path} is not an ONNX model: write one with python -m learner.export "
                "-c RUN -o OUT --format onnx, then give OUT (or OUT/model.onnx)"
            )
        if found is not None and runtime != "keras":
            return cls.load_onnx(found, max_speech_s)
        if found is not None:
            raise CheckpointError(f"{path} is an ONNX export: use --runtime onnx (or auto)")
        if Path(path).is_dir() and (Path(path) / "frontend.json").is_file():
            raise CheckpointError(
                f"{path} is an export without model.onnx: the commands run an ONNX export "
                "(python -m learner.export -c RUN -o OUT --format onnx) or the checkpoint "
                "itself (-c RUN); model.keras and saved_model are for other programs"
            )
        ckpt = resolve(path)
        state = ckpt.state()
        try:
            cfg = config_from_dict(state["config"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{ckpt.path}: no usable config in state.json ({exc})") from None
        if state.get("feature_spec") != cfg.features.fingerprint():
            raise CheckpointError(
                f"{ckpt.path}: its feature spec {state.get('feature_spec')} "
                "does not match its own config: the checkpoint is damaged"
            )
        from learner.model import build_model

        model = build_model(cfg.model, cfg.features.n_mels)
        assign_arrays(model.variables, ckpt.arrays("weights"), f"{ckpt.path} weights")
        return cls(
            cfg,
            model,
            ckpt,
            checked_threshold(state.get("threshold"), ckpt.path / "state.json"),
            max_speech_s=max_speech_s,
            source=ckpt.path,
            calibrations=read_calibrations(ckpt.calibrations(), ckpt.path),
            cohort=ckpt.cohort(),
            domain=read_domain(ckpt.path),
        )

    @classmethod
    def load_onnx(cls, path: Path, max_speech_s: float = MAX_SPEECH_S) -> SpeakerModel:
        """An exported ONNX model and the ``frontend.json`` written beside it."""
        front_file = path.parent / "frontend.json"
        try:
            front = json.loads(front_file.read_text())
            cfg = config_from_dict(front["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{front_file}: missing or unreadable ({exc}); an ONNX model needs the "
                "frontend.json that python -m learner.export writes beside it"
            ) from None
        if front.get("feature_spec") != cfg.features.fingerprint():
            raise CheckpointError(f"{front_file}: its feature spec does not match its config")
        check_frontend(front, cfg, front_file)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # 0: ONNX Runtime's own choice (all cores); VE_ONNX_THREADS=1 pins one core, as
        # bench/inference.py measures both runtimes.
        options.intra_op_num_threads = int(os.environ.get("VE_ONNX_THREADS", "0"))
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise CheckpointError(f"{path}: not a model ONNX Runtime can load ({exc})") from None
        return cls(
            cfg,
            session,
            None,
            front.get("threshold"),
            max_speech_s=max_speech_s,
            runtime="onnx",
            source=path,
            weights_fingerprint=str(front.get("fingerprint", "")),
            calibrations=read_calibrations(front.get("calibration") or {}, front_file),
            cohort=read_cohort(path.parent / "cohort.npy"),
            domain=read_domain(path.parent),
        )

    @property
    def spec(self) -> str:
        return self.cfg.features.fingerprint()

    @property
    def fingerprint(self) -> str:
        """Identifies the embeddings: the weights (:attr:`weights_id`) and, once adapted,
        the domain's transform (``+`` its fingerprint): vectors of two never mix."""
        return self.weights_id + (f"+{self.domain.fingerprint}" if self.domain else "")

    @functools.cached_property
    def weights_id(self) -> str:
        """Identifies the weights: a hash of the checkpoint's weights file (an ONNX export
        carries its checkpoint's, so their embeddings mix: parity is tested)."""
        if self.checkpoint is None:
            return self.weights_fingerprint
        return self.checkpoint.fingerprint()

    def features(self, path: str | Path) -> np.ndarray:
        return self.analyse(path)[0]

    def analyse(self, path: str | Path) -> tuple[np.ndarray, Quality]:
        """``[frames, n_mels]`` log-mel of the speech in ``path`` (its first
        ``max_speech_s`` seconds of speech) and the input's quality; AudioError on bad
        input, ``NotSpeech`` when the quality is below ``limits`` (silence, noise, a tone,
        music, too little speech). A long file is decoded block by block
        (``workers.extract.speech_parts``) and reading stops at the budget."""
        path = Path(path)
        try:
            frames, rate = audio_info(path)  # the header only
            seconds = frames / rate
        except AudioError:
            seconds = 0.0  # decoded at once below, where the decoder says what is wrong
        f = self.cfg.features
        meter = QualityMeter(f.sample_rate, f.win_length, f.hop_length, f.vad_db, f.vad_floor_db)
        budget = int(self.max_speech_s * f.sample_rate)
        parts, have = [], 0
        for part in speech_parts(path, seconds, f, meter):
            parts.append(part[: budget - have])
            have += len(parts[-1])
            if have >= budget:
                break  # the rest of the file is never decoded
        speech = parts[0] if len(parts) == 1 else np.concatenate(parts)
        quality = meter.result(len(speech) / f.sample_rate)
        self.limits.check(quality, path)
        return self.logmel(speech), quality

    @functools.cached_property
    def logmel(self) -> LogMel:
        """The front end's log-mel, built once (window and filterbank), not per file."""
        return LogMel(self.cfg.features)

    def embed_batch(self, x: np.ndarray) -> np.ndarray:
        if self.runtime == "onnx":
            name = self.model.get_inputs()[0].name
            return np.asarray(self.model.run(None, {name: x.astype(np.float32)})[0], np.float32)
        return np.asarray(self.model(x, training=False), dtype=np.float32)

    def embed_features(self, feats: list[np.ndarray]) -> np.ndarray:
        """One unit embedding per utterance, through the domain's transform when adapted."""
        emb = embed_features(feats, self.embed_batch, self.cfg.sampler.frames)
        return self.domain.transform(emb) if self.domain is not None and len(emb) else emb

    def embed_file(self, path: str | Path) -> np.ndarray:
        return self.embed(path)[0]

    def embed(self, path: str | Path) -> tuple[np.ndarray, Quality]:
        """The unit-norm embedding of ``path`` and the input's quality."""
        feats, quality = self.analyse(path)
        return self.embed_features([feats])[0], quality

    def score(self, a: str | Path, b: str | Path) -> float:
        return float(self.embed_file(a) @ self.embed_file(b))

    def calibration(self, asnorm: bool = False) -> Calibration | None:
        """The calibration that decides: the domain's once adapted, else the run's (or
        ``learner.calibrate``'s)."""
        found = self.domain.calibrations if self.domain is not None else self.calibrations
        return found.get("asnorm" if asnorm else "cosine")

    @property
    def scoring_cohort(self) -> np.ndarray | None:
        """The AS-norm cohort scores are normalised against: the domain's once adapted."""
        if self.domain is not None and self.domain.cohort is not None:
            return self.domain.cohort
        return self.cohort

    def normalised(self, scores: np.ndarray, probe: np.ndarray, refs: np.ndarray) -> np.ndarray:
        """AS-norm of ``scores`` (``refs @ probe``) against the stored cohort."""
        cohort = self.scoring_cohort
        if cohort is None or not len(cohort):
            raise ValueError(
                f"{self.source} stores no AS-norm cohort (a checkpoint from before cohorts, or "
                "from a run that did not finish): python -m learner.calibrate --data DIR -c "
                "CHECKPOINT stores one, or leave out --asnorm"
            )
        emb = np.vstack([probe[None], refs])
        trials = [(0, 0, k + 1) for k in range(len(refs))]
        return as_norm(np.asarray(scores, np.float64), emb, trials, cohort)


FINGERPRINT = re.compile(r"[0-9A-Za-z+_-]{0,80}")


def checked_threshold(t: Any, where: Path) -> float | None:
    """A stored cosine threshold (None: none stored), or a CheckpointError naming it."""
    if t is None:
        return None
    number = isinstance(t, (int, float)) and not isinstance(t, bool)
    if not (number and math.isfinite(t) and -1 <= t <= 1):
        raise CheckpointError(f"{where}: refused (threshold: {t!r:.40} is not a cosine in [-1, 1])")
    return float(t)


def frontend_fields(cfg: RunConfig) -> dict[str, Any]:
    """The front end an export's ``frontend.json`` states for other runtimes, from the config
    (``learner.export`` writes them; :func:`check_frontend` holds a file to them)."""
    c = cfg.features
    return {
        "sample_rate": c.sample_rate,
        "n_mels": c.n_mels,
        "win_length": c.win_length,
        "hop_length": c.hop_length,
        "n_fft": c.n_fft,
        "fmin": c.fmin,
        "fmax": c.fmax,
        "segment_frames": cfg.sampler.frames,
    }


def check_frontend(front: dict, cfg: RunConfig, where: Path) -> None:
    """The top-level fields of an export's ``frontend.json`` agree with its config and are
    in range (they are documented for other runtimes, so a mismatch means an edited file):
    a CheckpointError names the field. The calibrations are checked as they are read."""
    same = frontend_fields(cfg)
    for key, want in same.items():
        if key in front and front[key] != want:
            raise CheckpointError(
                f"{where}: refused ({key}: {front[key]!r:.40} is not the config's {want!r})"
            )
    checked_threshold(front.get("threshold"), where)
    fp = front.get("fingerprint", "")
    if not isinstance(fp, str) or not FINGERPRINT.fullmatch(fp):
        raise CheckpointError(f"{where}: refused (fingerprint: {fp!r:.40} is not a fingerprint)")


def read_calibrations(found: dict, where: Path) -> dict[str, Calibration]:
    if not isinstance(found, dict):
        raise CheckpointError(f"{where}: calibration: not a JSON object")
    try:
        return {k: Calibration.from_dict(v, f"calibration.{k}") for k, v in found.items() if v}
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{where}: refused ({exc})") from None


def read_domain(folder: Path) -> Domain | None:
    try:
        return Domain.read(folder)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def read_cohort(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    return np.load(path, allow_pickle=False).astype(np.float32)


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given; folders expanded to the audio files below them (sorted), with the
    extensions the corpus scan reads, in any case (``A.WAV`` too)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(
                    f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file()
                )
            )
        else:
            out.append(p)
    return out
