"""The driver's eye on its producers: a producer loop that ends in an error never goes unseen.

Ray restarts a producer that is killed, but a loop that *raises* (a corpus whose
speakers all turn out silent, a read-only cache, ``MemoryError``) simply ends, and
the learner would wait for data forever. The driver polls this watch while it
trains: a loop that failed is started again, unless it failed the same way
``max_failures`` times; once every producer has given up, :meth:`check` raises
:class:`ProducersFailed` with the producers' error, and the run stops with it.

    watch = ProducerWatch()
    start_producers(cfg, run_id, 2, registry=registry, watch=watch)
    while training:
        watch.check()        # raises ProducersFailed when no producer is left
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import ray

log = logging.getLogger(__name__)

BAD_INPUT = ("CorpusError", "AudioError", "ConfigError")  # the user's data or settings


class ProducersFailed(RuntimeError):
    """Every producer of the run gave up; ``bad_input`` when the cause is the corpus or config."""

    def __init__(self, message: str, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


@dataclass
class _Loop:
    handle: Any
    ref: Any
    errors: list[str] = field(default_factory=list)
    failed: str | None = None  # the error it gave up on
    ended: bool = False  # returned normally (stopped, or the queue went away)


def describe(exc: BaseException) -> str:
    """One line for a producer's error: the original exception's type and message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {cause}"
    # An actor whose constructor raised: the message ends with the original exception,
    # written as "module.path.SomeError: message".
    for line in reversed([line.strip() for line in str(exc).splitlines()]):
        m = _EXCEPTION_LINE.match(line)
        if m:
            return f"{m.group(1)}: {m.group(2)}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


_EXCEPTION_LINE = re.compile(r"^(?:[\w]+\.)*(\w+(?:Error|Exception|Exit)): (.*)$")


class ProducerWatch:
    def __init__(self, max_failures: int = 3) -> None:
        self.max_failures = max_failures
        self.loops: dict[int, _Loop] = {}

    def add(self, worker_id: int, handle: Any, ref: Any) -> None:
        self.loops[worker_id] = _Loop(handle, ref)

    def poll(self) -> None:
        """Look at loops that ended (never blocks); restart the ones that failed."""
        running = {
            loop.ref: wid for wid, loop in self.loops.items() if not (loop.failed or loop.ended)
        }
        if not running:
            return
        ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
        for ref in ready:
            wid = running[ref]
            loop = self.loops[wid]
            try:
                ray.get(ref)
                loop.ended = True
            except ray.exceptions.RayError as exc:
                self._failed(wid, loop, describe(exc))

    def _failed(self, wid: int, loop: _Loop, error: str) -> None:
        loop.errors.append(error)
        if loop.errors.count(error) >= self.max_failures:
            loop.failed = error
            log.error(
                "producer %d gave up after failing %d times: %s", wid, len(loop.errors), error
            )
            return
        log.warning("producer %d stopped with an error (%s); starting its loop again", wid, error)
        try:
            loop.ref = loop.handle.run.remote()
        except ray.exceptions.RayError as exc:  # the actor itself is gone for good
            loop.failed = describe(exc)

    def settle(self, timeout: float = 5.0) -> None:
        """After the run stopped its producers: take each loop's result, so the errors of
        loops ended by ``ray.kill`` are handled here, not printed by Ray as "Task
        ProducerActor.run failed" when their references go."""
        refs = [loop.ref for loop in self.loops.values()]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.get(ref, timeout=0)
        self.loops.clear()

    def alive(self) -> list[int]:
        return sorted(w for w, loop in self.loops.items() if not (loop.failed or loop.ended))

    def check(self) -> None:
        """Poll; raise :class:`ProducersFailed` when producers were started and all failed."""
        self.poll()
        if not self.loops or not all(loop.failed for loop in self.loops.values()):
            return
        errors = sorted({loop.failed for loop in self.loops.values() if loop.failed})
        bad_input = any(e.startswith(BAD_INPUT) for e in errors)
        raise ProducersFailed(
            f"all {len(self.loops)} producer(s) failed: " + "; ".join(errors), bad_input
        )
