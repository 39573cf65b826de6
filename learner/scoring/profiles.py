"""Enrolled speaker profiles: a JSON file of mean embeddings (no pickle), tied to the model
that made them (its feature spec and the fingerprint of its weights).

    with ProfileStore.update("team.json") as store:    # locked: concurrent enrols all land
        store.check_model(model.spec, model.fingerprint)
        store.add("alice", embeddings, files)
    names, matrix = ProfileStore("team.json").matrix()
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cluster.files import atomic_write_text


class ProfileStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data = {"spec": None, "model": None, "speakers": {}}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{self.path} is not a profile store ({exc})") from None
            if not (
                isinstance(data, dict)
                and isinstance(data.get("speakers"), dict)
                and all(
                    isinstance(p, dict) and isinstance(p.get("embedding"), list)
                    for p in data["speakers"].values()
                )
            ):
                raise ValueError(
                    f"{self.path} is not a profile store (no 'speakers' with embeddings); "
                    "profile stores are written by python -m learner.enroll"
                )
            self.data = {"spec": None, "model": None, **data}

    @classmethod
    @contextlib.contextmanager
    def update(cls, path: str | Path) -> Iterator[ProfileStore]:
        """Read, change and save the store under an exclusive lock (``<store>.lock``), so
        two enrolments at once both land instead of the last one winning."""
        path = Path(path)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                store = cls(path)
                yield store
                store.save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def check_model(self, spec: str, fingerprint: str) -> None:
        """Refuse a model other than the one the profiles were enrolled with: scores between
        embeddings of two models mean nothing, even with the same features."""
        if self.data["spec"] not in (None, spec):
            raise ValueError(
                f"{self.path} was enrolled with feature spec {self.data['spec']}, "
                f"this checkpoint uses {spec}: enrol again with this checkpoint"
            )
        if self.data["model"] not in (None, fingerprint):
            raise ValueError(
                f"{self.path} was enrolled with model {self.data['model']}, this checkpoint "
                f"is {fingerprint}: enrol again with this checkpoint (or use another --store)"
            )
        self.data["spec"], self.data["model"] = spec, fingerprint

    def add(self, name: str, embeddings: np.ndarray, files: list[str]) -> None:
        mean = embeddings.mean(axis=0)
        mean /= max(np.linalg.norm(mean), 1e-12)
        self.data["speakers"][name] = {"embedding": mean.round(6).tolist(), "files": files}

    def names(self) -> list[str]:
        return sorted(self.data["speakers"])

    def matrix(self) -> tuple[list[str], np.ndarray]:
        names = self.names()
        return names, np.array([self.data["speakers"][n]["embedding"] for n in names], np.float32)

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data))
