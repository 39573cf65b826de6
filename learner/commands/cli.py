"""What the inference commands share: the --checkpoint argument and clear errors (exit 2)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from learner.checkpoint import CheckpointError  # noqa: E402
from learner.commands.speaker_model import MAX_SPEECH_S, RUNTIMES, SpeakerModel  # noqa: E402
from workers.audio import AudioError  # noqa: E402

EXIT_ERROR = 2


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        help="checkpoint folder, a run folder (its best checkpoint), or an ONNX export",
    )
    p.add_argument(
        "--max-speech",
        type=float,
        default=MAX_SPEECH_S,
        metavar="SECONDS",
        help="embed at most this much speech of each input (the first found; a long "
        f"recording is read block by block, so memory stays bounded; default {MAX_SPEECH_S:g})",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the network: ONNX Runtime for an ONNX export (a .onnx file or a "
        "python -m learner.export --format onnx folder; no TensorFlow needed), Keras for "
        "a checkpoint (auto: by what --checkpoint names)",
    )
    return p


def load_model(a: argparse.Namespace) -> SpeakerModel:
    """The model a command's ``--checkpoint``, ``--max-speech`` and ``--runtime`` name."""
    if not a.max_speech > 0:
        raise ValueError(f"--max-speech must be positive, got {a.max_speech}")
    return SpeakerModel.load(a.checkpoint, max_speech_s=a.max_speech, runtime=a.runtime)


def guarded(body: Callable[[], int]) -> int:
    """Run a command body; bad input becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return body()
    except (AudioError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
