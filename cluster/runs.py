"""Run directories: ``runs/<run-id>/`` with the resolved config, checkpoints, Redis data and logs.

run = RunDir.create("runs", cfg)              # runs/20261124-073721-3f9a/, config written
run = RunDir.open("runs/20261124-073721-3f9a")
run.checkpoints, run.averaged, run.speakers_file   # every name of the folder, here only
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.config import RunConfig, config_from_dict
from cluster.files import atomic_write_text

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafeRunFolder(ValueError):
    """A part of a run folder that resolves elsewhere (a planted symlink): never used."""


def is_run_id(text: str) -> bool:
    """A plain name for ``runs/<id>``: no separators, no ``..``, nothing absolute."""
    return bool(_RUN_ID.match(text)) and ".." not in text


def new_run_id() -> str:
    """Sortable and unique: ``20261124-073721-3f9a``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    # What a run folder holds, each in one place.
    config_file = property(lambda self: self.path / "config.yaml")
    checkpoints = property(lambda self: self.path / "checkpoints")
    redis_dir = property(lambda self: self.path / "redis")
    logs = property(lambda self: self.path / "logs")
    averaged = property(lambda self: self.path / "averaged")
    tensorboard = property(lambda self: self.path / "tensorboard")
    speakers_file = property(lambda self: self.path / "speakers.json")
    # the driver's scan of the corpus at this start, which producers load (data.snapshot)
    corpus_snapshot = property(lambda self: self.path / "corpus.npz")

    def store_dir(self) -> Path:
        """The embedded Redis folder, refused (``UnsafeRunFolder``) when it resolves outside this
        run folder: a planted symlink must never make us write a config, a password or data
        elsewhere, or start a server there."""
        folder = self.redis_dir
        if folder.is_symlink() or (
            folder.exists() and folder.resolve().parent != self.path.resolve()
        ):
            raise UnsafeRunFolder(
                f"{folder} is a link or resolves outside its run folder; refusing it"
            )
        return folder

    @classmethod
    def create(cls, root: str | Path, cfg: RunConfig, run_id: str | None = None) -> RunDir:
        run = cls(Path(root).resolve() / (run_id or new_run_id()))
        for sub in (run.path, run.checkpoints, run.redis_dir, run.logs):
            sub.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(Path(path).resolve())
        if not run.config_file.exists():
            raise FileNotFoundError(f"{run.path} is not a run directory (no config.yaml)")
        return run

    def check_writable(self) -> None:
        """A resumed run writes checkpoints, metrics and its config here: an OSError that says
        why (a read-only filesystem, a full disk, no permission) before anything starts."""
        probe = self.path / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot write the run folder {self.path} ({exc.strerror or exc})"
            ) from None

    def write_config(self, cfg: RunConfig) -> None:
        """The run's config, headed by a note of where its paths point: they are this
        machine's (a resumed or evaluated run elsewhere passes --data)."""
        note = (
            f"# The config of run {self.run_id}, written on {socket.gethostname()}. Paths are\n"
            "# that machine's (data.path: the corpus it read); elsewhere, give --data or\n"
            "# --set data.path=... when resuming. Edit nothing here by hand: --resume refuses\n"
            "# a model or feature setting that differs from the checkpoint's.\n"
        )
        atomic_write_text(self.config_file, note + cfg.to_yaml())

    def read_config(self) -> RunConfig:
        return config_from_dict(yaml.safe_load(self.config_file.read_text()))

    def write_speakers(self, corpus: str, training: list[str], held_out: list[str]) -> None:
        """Which speakers the run trains on and which it holds out (its EER, threshold and
        calibration come from those), and the corpus both came from."""
        text = json.dumps(
            {"corpus": corpus, "held_out": sorted(held_out), "training": sorted(training)},
            indent=1,
        )
        atomic_write_text(self.speakers_file, text)

    def read_speakers(self) -> dict | None:
        """What :meth:`write_speakers` wrote; None for a run from before the file."""
        try:
            found = json.loads(self.speakers_file.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir | None:
        """The run folder a checkpoint folder (``checkpoints/ckpt-*``, ``averaged/*``) or a
        run folder belongs to; None when it is not inside one."""
        p = Path(checkpoint).resolve()
        for candidate in (p, p.parent, p.parent.parent):
            if (candidate / "config.yaml").is_file():
                return cls(candidate)
        return None
