"""The ``Batch`` contract between producers and the learner.

Call sequence, producer to learner::

    # producer process (workers.producer.BatchProducer)
    batch = Batch(features, speakers, worker_id=3, seq=17, created_at=time.time(),
                  build_seconds=0.012, spec=feature_cfg.fingerprint())
    queue.put(Envelope(ray.put(batch), ...))      # cluster.queue: only the ref travels

    # learner process (learner.learner.Learner via cluster.queue.BatchStream)
    batch = ray.get(envelope.ref)                 # zero-copy from the local object store
    batch.validate(spec=..., triplets=..., frames=..., n_mels=...)

Features are laid out ``[anchors; positives; negatives]``: rows ``i``,
``B + i`` and ``2B + i`` form triplet ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class BatchError(ValueError):
    """A batch that does not satisfy the contract (wrong spec, shape, dtype or labels)."""


@dataclass(frozen=True)
class Batch:
    features: np.ndarray  # [3B, T, n_mels] float16 or float32
    speakers: np.ndarray  # [3B] int32 speaker indices (of the producer's database)
    worker_id: int
    seq: int
    created_at: float
    build_seconds: float
    spec: str  # FeatureConfig.fingerprint() of the producer
    sampler_state: str = ""  # JSON: the producer's sampler state after this batch (for resume)

    @property
    def triplets(self) -> int:
        return self.features.shape[0] // 3

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes + self.speakers.nbytes)

    def parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = self.triplets
        f = self.features
        return f[:b], f[b : 2 * b], f[2 * b :]

    def validate(
        self,
        spec: str | None = None,
        triplets: int | None = None,
        frames: int | None = None,
        n_mels: int | None = None,
    ) -> Batch:
        """Raise :class:`BatchError` unless the batch fits; returns itself for chaining."""
        f, s = self.features, self.speakers
        if spec is not None and self.spec != spec:
            raise BatchError(
                f"batch from worker {self.worker_id} has feature spec {self.spec}, the learner "
                f"expects {spec}: that producer runs with different feature settings"
            )
        if f.ndim != 3 or f.shape[0] % 3 or f.shape[0] == 0:
            raise BatchError(f"features must be [3B, T, n_mels], got {f.shape}")
        if f.dtype not in (np.float16, np.float32):
            raise BatchError(f"features must be float16 or float32, got {f.dtype}")
        if s.shape != (f.shape[0],) or s.dtype != np.int32:
            raise BatchError(f"speakers must be int32 [{f.shape[0]}], got {s.dtype} {s.shape}")
        b = f.shape[0] // 3
        for name, want, got in (
            ("triplets", triplets, b),
            ("frames", frames, f.shape[1]),
            ("n_mels", n_mels, f.shape[2]),
        ):
            if want is not None and want != got:
                raise BatchError(f"batch has {got} {name}, expected {want}")
        if np.any(s[:b] != s[b : 2 * b]):
            raise BatchError("anchor and positive speakers differ")
        if np.any(s[:b] == s[2 * b :]):
            raise BatchError("a negative has the anchor's speaker")
        if not np.isfinite(f).all():
            raise BatchError("features contain NaN or infinity")
        return self
