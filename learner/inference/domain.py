"""A domain: what ``python -m learner.adapt`` stores beside a checkpoint (or an ONNX
export) so that its decisions hold on recordings unlike the run's held-out speakers.

    domain = Domain.read(checkpoint_folder)        # None where none was stored
    emb = domain.transform(emb)                    # the domain's mean removed, renormalised
    domain.calibrations["cosine"].decide(...)      # the calibration re-estimated on the domain
    domain.write(folder)                           # domain.npz, then domain.json (atomic)

It holds the domain's mean embedding (subtracted from every embedding before scoring, as
the SRE recipes remove the in-domain mean), a cohort of the domain's own recordings for
AS-norm, and the calibrations carried to the domain (``learner.scoring.unlabelled``).
``SpeakerModel`` applies all three wherever it embeds, scores or decides, for Keras and
ONNX alike, so every command agrees.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cluster.files import atomic_write, atomic_write_text
from learner.checkpoint import DOMAIN_JSON, DOMAIN_NPZ
from learner.scoring.calibration import Calibration


@dataclass
class Domain:
    name: str
    mean: np.ndarray  # [D] the domain's mean embedding (before the transform)
    cohort: np.ndarray | None  # [N, D] AS-norm cohort of the domain's recordings
    calibrations: dict[str, Calibration]
    info: dict[str, Any] = field(default_factory=dict)  # recordings, pairs, target share ...

    def transform(self, emb: np.ndarray) -> np.ndarray:
        """Unit vectors with the domain's mean removed (rows of ``emb``, or one vector)."""
        x = np.asarray(emb, np.float32) - self.mean
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)

    @property
    def fingerprint(self) -> str:
        """Identifies the transform: embeddings of two domains never mix."""
        return hashlib.sha1(np.asarray(self.mean, np.float32).tobytes()).hexdigest()[:8]

    def write(self, folder: str | Path) -> None:
        """``domain.npz`` then ``domain.json``, each atomically: a reader sees the old
        domain or the new one (the json names the arrays' fingerprint), never a mix."""
        folder = Path(folder)
        arrays = {"mean": np.asarray(self.mean, np.float32)}
        if self.cohort is not None:
            arrays["cohort"] = np.asarray(self.cohort, np.float32)
        atomic_write(folder / DOMAIN_NPZ, lambda fh: np.savez(fh, **arrays))
        meta = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "info": self.info,
            "calibration": {k: c.as_dict() for k, c in self.calibrations.items()},
        }
        atomic_write_text(folder / DOMAIN_JSON, json.dumps(meta, indent=1))

    @classmethod
    def read(cls, folder: str | Path) -> Domain | None:
        """The domain stored in ``folder``; None where there is none. A damaged or
        mismatched pair of files raises ``ValueError`` naming the file."""
        folder = Path(folder)
        meta_file = folder / DOMAIN_JSON
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            with np.load(folder / DOMAIN_NPZ, allow_pickle=False) as z:
                mean = z["mean"].astype(np.float32)
                cohort = z["cohort"].astype(np.float32) if "cohort" in z.files else None
            cals = {
                k: Calibration.from_dict(v, f"calibration.{k}")
                for k, v in meta["calibration"].items()
            }
            domain = cls(str(meta["name"]), mean, cohort, cals, dict(meta.get("info") or {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{meta_file}: unreadable domain ({exc})") from None
        if domain.fingerprint != meta.get("fingerprint") or not np.isfinite(mean).all():
            raise ValueError(f"{meta_file}: does not match {DOMAIN_NPZ} beside it")
        return domain
