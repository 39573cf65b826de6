"""Checkpoints: atomic, versioned, framework-neutral, with retention.

A checkpoint is a folder ``checkpoints/ckpt-<step:08d>/`` holding

- ``weights.npz``: every model variable, keyed by its Keras path;
- ``optimizer.npz``: every optimizer variable, keyed by its path;
- ``state.json``: format version, step, config, feature spec, producer sampler
  states, evaluation results, EER threshold, the score calibration of its evaluation;
- ``calibration.json`` and ``cohort.npz`` (the checkpoints a run ends with, or after
  ``python -m learner.calibrate``): the score calibrations (``cosine``, ``asnorm``) and
  a cohort of training-speaker embeddings for AS-norm. Each is replaced atomically.

It is written into ``.tmp-*`` beside it, each file fsynced, then renamed into
place in one ``os.rename``: a process killed at any moment leaves either the
whole checkpoint or none (a stale ``.tmp-*`` is ignored and cleaned up). Arrays
are stored by variable path in plain ``.npz`` (no pickle), so a checkpoint
loads across TensorFlow/Keras versions and backends; a checkpoint of another
feature configuration or model shape is refused with a clear message.

Retention keeps the newest ``keep`` checkpoints plus the best by EER; a checkpoint is
renamed out of sight before it is deleted, so deletion is atomic too
(recorded in ``checkpoints/best.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.files import atomic_write, atomic_write_text, fsync_dir
from cluster.runs import RunDir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8})$")
_ASIDE = re.compile(r"^\.old-(ckpt-\d{8})-\d+$")  # a re-saved step's previous copy


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or of another configuration."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path

    @property
    def step(self) -> int:
        aside = _ASIDE.match(self.path.name)
        return int(_NAME.match(aside.group(1) if aside else self.path.name).group(1))

    def state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.path / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: unreadable state.json ({exc})") from None
        if state.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"{self.path}: checkpoint format {state.get('format')!r}, "
                f"this version reads {FORMAT_VERSION}"
            )
        return state

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path / f"{name}.npz", allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.path}: unreadable {name}.npz ({exc})") from None

    def calibrations(self) -> dict[str, dict[str, Any]]:
        """The score calibrations by kind: ``calibration.json`` if written (end of run,
        ``learner.calibrate``), else the one of the checkpoint's own evaluation; {} for a
        checkpoint from before calibration."""
        path = self.path / "calibration.json"
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: unreadable ({exc})") from None
            if not isinstance(found, dict):
                raise CheckpointError(f"{path}: not a calibration file")
            return found
        return dict(self.state().get("calibration") or {})

    def fingerprint(self) -> str:
        """Identifies the weights: a hash of ``weights.npz`` (what ``SpeakerModel``, embedding
        files and fine-tuning lineage record)."""
        digest = hashlib.sha1()
        with open(self.path / "weights.npz", "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    def cohort(self) -> np.ndarray | None:
        """The AS-norm cohort (``[speakers, D]`` unit vectors), None if none was stored."""
        if not (self.path / "cohort.npz").is_file():
            return None
        return self.arrays("cohort")["embeddings"].astype(np.float32)

    def write_extras(
        self,
        calibrations: dict[str, dict[str, Any]] | None = None,
        cohort: np.ndarray | None = None,
    ) -> None:
        """Add or replace ``calibration.json`` / ``cohort.npz``, each atomically."""
        if cohort is not None:
            atomic_write(
                self.path / "cohort.npz",
                lambda fh: np.savez(fh, embeddings=np.asarray(cohort, np.float32)),
            )
        if calibrations is not None:
            atomic_write_text(
                self.path / "calibration.json",
                json.dumps(calibrations, indent=1, default=_json_default),
            )


# What is added to a checkpoint after it is saved (the end of a run, learner.calibrate,
# learner.adapt): a re-save of the same step (the exit checkpoint right after the end of a
# run) keeps them.
DOMAIN_JSON, DOMAIN_NPZ = "domain.json", "domain.npz"  # learner.inference.domain
STEP_EXTRAS = ("calibration.json", "cohort.npz", DOMAIN_JSON, DOMAIN_NPZ)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())


def variables_to_arrays(variables) -> dict[str, np.ndarray]:
    """``{"<index>/<path>": value}``; the index keeps variables with equal paths apart."""
    return {f"{i:04d}/{v.path}": np.asarray(v.numpy()) for i, v in enumerate(variables)}


def assign_arrays(variables, arrays: dict[str, np.ndarray], what: str) -> None:
    by_path = {k.split("/", 1)[1]: a for k, a in arrays.items()}
    if len(by_path) != len(arrays) or len(arrays) != len(variables):
        by_path = {}  # ambiguous paths: fall back to order below
    ordered = [arrays[k] for k in sorted(arrays)]
    if len(ordered) != len(variables):
        raise CheckpointError(
            f"{what}: checkpoint has {len(ordered)} variables, "
            f"the model has {len(variables)} (another model config?)"
        )
    for i, v in enumerate(variables):
        value = by_path.get(v.path, ordered[i])
        if tuple(value.shape) != tuple(v.shape):
            raise CheckpointError(
                f"{what}: {v.path} has shape {value.shape} in the checkpoint, "
                f"{tuple(v.shape)} in the model (another model config?)"
            )
        v.assign(value)


class CheckpointManager:
    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, keep)

    def all(self) -> list[Checkpoint]:
        """The checkpoints, oldest first. Only looks: a reader (a CLI on a running run) never
        renames anything, so it can never break a save in progress. A step whose re-save was
        interrupted between its two renames is listed as its set-aside copy."""
        if not self.dir.is_dir():
            return []
        found, aside = {}, {}
        for p in self.dir.iterdir():
            if _NAME.match(p.name) and p.is_dir():
                found[p.name] = Checkpoint(p)
            elif (m := _ASIDE.match(p.name)) and p.is_dir():
                aside[m.group(1)] = Checkpoint(p)
        for name, ckpt in aside.items():
            found.setdefault(name, ckpt)
        return sorted(found.values(), key=lambda c: c.step)

    def _remove(self, path: Path) -> None:
        """Delete a checkpoint folder: renamed out of sight first (atomic), then removed, so a
        kill during the slow part never leaves a visible, half-deleted checkpoint."""
        gone = self.dir / f".del-{path.name}-{os.getpid()}"
        try:
            os.rename(path, gone)
        except OSError:
            return
        shutil.rmtree(gone, ignore_errors=True)

    def _recover(self) -> None:
        """Undo a re-save of one step that was killed between its two renames (the writer
        does this before it saves; readers only look)."""
        for old in self.dir.glob(".old-ckpt-*"):
            if not (m := _ASIDE.match(old.name)):
                continue
            final = self.dir / m.group(1)
            try:
                if final.exists():
                    self._remove(old)
                else:
                    os.rename(old, final)
            except OSError:
                pass  # another process is doing the same

    def latest(self) -> Checkpoint | None:
        found = self.all()
        return found[-1] if found else None

    def best(self) -> Checkpoint | None:
        try:
            name = json.loads((self.dir / "best.json").read_text())["checkpoint"]
            if isinstance(name, str) and _NAME.match(name) and (self.dir / name).is_dir():
                return Checkpoint(self.dir / name)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # best.json missing, damaged or stale: each checkpoint records whether it was the
        # best when written, so retention never deletes the best for want of the pointer.
        marked = [c for c in self.all() if _was_best(c)]
        return marked[-1] if marked else None

    def save(
        self,
        step: int,
        weights: dict[str, np.ndarray],
        optimizer: dict[str, np.ndarray],
        state: dict[str, Any],
        best: bool = False,
        extra: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> Checkpoint:
        """``extra``: more arrays files (``{"head": {...}}`` -> ``head.npz``), beside the
        model's weights, so inference never sees them."""
        final = self.dir / f"ckpt-{step:08d}"
        tmp = self.dir / f".tmp-{final.name}-{os.getpid()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._recover()
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._write(tmp, final, step, weights, optimizer, state, best, extra)
        except OSError as exc:  # a full disk, a quota, a folder gone read-only
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays
            raise CheckpointError(
                f"cannot write checkpoint {final} ({exc.strerror or exc}); the checkpoints "
                f"before it are intact. Free space in {self.dir} and resume the run"
            ) from None
        old = None
        if final.exists():  # the same step saved again (e.g. at exit right after a periodic
            # save): move the old one aside first, so a kill at any point leaves one in place
            old = self.dir / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            self._remove(old)
        fsync_dir(self.dir)
        ckpt = Checkpoint(final)
        if best:
            atomic_write_text(
                self.dir / "best.json", json.dumps({"checkpoint": final.name, "step": step})
            )
        self._retain()
        return ckpt

    def _write(self, tmp, final, step, weights, optimizer, state, best, extra) -> None:
        """Every file of the checkpoint into ``tmp``, each fsynced, then ``tmp`` itself."""
        tmp.mkdir()
        _save_npz(tmp / "weights.npz", weights)
        _save_npz(tmp / "optimizer.npz", optimizer)
        for name, arrays in (extra or {}).items():
            _save_npz(tmp / f"{name}.npz", arrays)
        meta = {"format": FORMAT_VERSION, "step": step, "saved_at": time.time(), **state}
        meta["best"] = best
        with open(tmp / "state.json", "w") as fh:
            json.dump(meta, fh, indent=1, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        for name in STEP_EXTRAS:  # the same step saved again: the same model, same extras
            if (final / name).is_file():
                shutil.copy2(final / name, tmp / name)
        fsync_dir(tmp)

    def _retain(self) -> None:
        for stale in [*self.dir.glob(".tmp-*"), *self.dir.glob(".del-*")]:
            if not stale.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(stale, ignore_errors=True)
        keep = {c.path for c in self.all()[-self.keep :]}
        best = self.best()
        if best is not None:
            keep.add(best.path)
        for ckpt in self.all():
            if ckpt.path not in keep:
                self._remove(ckpt.path)

    def size_bytes(self, ckpt: Checkpoint) -> int:
        return sum(f.stat().st_size for f in ckpt.path.iterdir())


def _was_best(ckpt: Checkpoint) -> bool:
    try:
        return bool(ckpt.state().get("best"))
    except CheckpointError:
        return False


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def resolve(path: str | Path) -> Checkpoint:
    """A checkpoint folder, a ``checkpoints/`` folder or a run folder -> a checkpoint.

    For a folder of checkpoints the best one is taken, else the latest. For a run folder
    whose end-of-run average (``averaged/``, ``learner.average_last``) was evaluated on the
    held-out speakers no worse than that best checkpoint at its evaluation, the average.
    """
    p = Path(path)
    if _NAME.match(p.name) and p.is_dir():
        return Checkpoint(p)
    for directory in (RunDir(p).checkpoints, p):
        if directory.is_dir():
            mgr = CheckpointManager(directory)
            found = mgr.best() or mgr.latest()
            if found is not None:
                return _average_if_better(p, found) if directory != p else found
    raise CheckpointError(f"no checkpoint at {p}")


def _held_out_eer(ckpt: Checkpoint, key: str) -> float:
    try:
        return float(ckpt.state()[key]["eer"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return math.inf


def _average_if_better(run: Path, best: Checkpoint) -> Checkpoint:
    folder = RunDir(run).averaged
    averaged = CheckpointManager(folder).latest() if folder.is_dir() else None
    if averaged is None:
        return best
    eer = _held_out_eer(averaged, "averaged_eval")
    return averaged if eer < math.inf and eer <= _held_out_eer(best, "last_eval") else best
