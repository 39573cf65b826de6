"""What the inference commands share: the --checkpoint argument and clear errors (exit 2).

p = parser("python -m learner.verify", __doc__)   # --checkpoint, --runtime, limits
add_progress(p)                                    # --no-progress
return guarded(lambda: body(load_model(p.parse_args(argv))))
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from learner.backend import VERBOSE_ENV  # noqa: E402
from learner.checkpoint import CheckpointError  # noqa: E402
from learner.inference.speaker_model import MAX_SPEECH_S, RUNTIMES, SpeakerModel  # noqa: E402
from workers.audio import AudioError  # noqa: E402
from workers.quality import QualityLimits  # noqa: E402

EXIT_ERROR = 2


def finite(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` refused with exit code 2)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return x


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (newline, ESC, DEL, C1) escaped as
    ``\n``, ``\x1b``, so a stored name cannot forge output lines or drive the terminal."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def speaker_name(text: str) -> str:
    """An argparse type: a speaker name without control characters (it is printed)."""
    if not text.strip() or printable(text) != text:
        raise argparse.ArgumentTypeError(
            f"{printable(text)!r}: a name needs visible characters and no control characters"
        )
    return text


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0 (a minimum; 0 turns its check off)."""
    x = finite(text)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return x


def positive(text: str) -> float:
    x = finite(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return x


def probability(text: str) -> float:
    """An argparse type: a rate or prior strictly between 0 and 1."""
    x = finite(text)
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (both excluded)")
    return x


def parser(
    prog: str, doc: str | None, quality: bool = True, checkpoint: bool = True
) -> argparse.ArgumentParser:
    """The shared arguments; ``quality``: also the speech minimums (commands that embed);
    ``checkpoint``: whether --checkpoint is required (evaluate can score a baseline alone)."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        "-c",
        required=checkpoint,
        help="checkpoint folder, a run folder (its best checkpoint), or an ONNX export",
    )
    p.add_argument(
        "--max-speech",
        type=positive,
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
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's native start-up messages (CUDA, oneDNN) on stderr",
    )
    if quality:
        add_limits(p)
    return p


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: long work shows a bar on stderr (on a terminal) unless told not to."""
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        default=None,
        help="no progress bar on stderr (default: one when stderr is a terminal)",
    )


def add_limits(p: argparse.ArgumentParser) -> None:
    limits = QualityLimits()
    q = p.add_argument_group(
        "what counts as speech (an input below a minimum is refused with exit code 2)"
    )
    q.add_argument(
        "--min-speech",
        type=non_negative,
        default=limits.min_speech_s,
        metavar="SECONDS",
        help=f"seconds of speech after silence removal (default {limits.min_speech_s:g})",
    )
    q.add_argument(
        "--min-snr",
        type=non_negative,
        default=limits.min_snr_db,
        metavar="DB",
        help="estimated signal-to-noise ratio: loud frames over the noise floor "
        f"(default {limits.min_snr_db:g}; 0 turns the check off)",
    )
    q.add_argument(
        "--min-dynamics",
        type=non_negative,
        default=limits.min_dynamics_db,
        metavar="DB",
        help="how much the spectrum changes over 50 ms: speech moves, steady noise, tones "
        f"and music do not (default {limits.min_dynamics_db:g}, {limits.clean_factor:g} of it "
        f"for an input above {limits.clean_snr_db:g} dB SNR; 0 turns the check off)",
    )


def load_model(a: argparse.Namespace) -> SpeakerModel:
    """The model a command's ``--checkpoint``, ``--max-speech`` and ``--runtime`` name."""
    if not a.max_speech > 0:
        raise ValueError(f"--max-speech must be positive, got {a.max_speech}")
    if getattr(a, "verbose", False):
        os.environ[VERBOSE_ENV] = "1"
    model = SpeakerModel.load(a.checkpoint, max_speech_s=a.max_speech, runtime=a.runtime)
    if hasattr(a, "min_speech"):
        model.limits = QualityLimits(a.min_speech, a.min_snr, a.min_dynamics)
    return model


def guarded(body: Callable[[], int]) -> int:
    """Run a command body; bad input becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return body()
    except (AudioError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
