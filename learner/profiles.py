"""Enrolled speaker profiles: a JSON file of mean embeddings (no pickle), tied to one feature spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cluster.files import atomic_write_text


class ProfileStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data = {"spec": None, "speakers": {}}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError as exc:
                raise ValueError(f"{self.path} is not a profile store ({exc})") from None

    def check_spec(self, spec: str) -> None:
        if self.data["spec"] not in (None, spec):
            raise ValueError(
                f"{self.path} was enrolled with feature spec {self.data['spec']}, "
                f"this checkpoint uses {spec}: enrol again with this checkpoint"
            )
        self.data["spec"] = spec

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
