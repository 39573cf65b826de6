"""Checkpoints on disk: retention, the best pointer, atomic writes and re-saves, readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from learner.checkpoint import CheckpointManager, resolve

KILLER = textwrap.dedent("""
    import sys, numpy as np
    from learner.checkpoint import CheckpointManager
    mgr = CheckpointManager(sys.argv[1], keep=3)
    big = {f"{i:04d}/w{i}": np.full((256, 1024), i, dtype="float32") for i in range(8)}
    step = 0
    while True:
        step += 1
        mgr.save(step, big, big, {"step": step}, best=step % 5 == 0)
        print(step, flush=True)
""")


def test_retention_keeps_last_k_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    w = {"0000/x": np.zeros(3)}
    for step in (1, 2, 3, 4, 5):
        mgr.save(step, w, w, {"n": step}, best=step == 2)
    assert [c.step for c in mgr.all()] == [2, 4, 5]
    assert mgr.best().step == 2


@pytest.mark.parametrize(("averaged_eer", "chosen"), [(0.08, "averaged"), (0.12, "checkpoints")])
def test_a_run_resolves_to_its_average_when_it_evaluated_no_worse(tmp_path, averaged_eer, chosen):
    w = {"0000/x": np.zeros(3)}
    mgr = CheckpointManager(tmp_path / "run" / "checkpoints")
    mgr.save(10, w, w, {"last_eval": {"eer": 0.05}})
    mgr.save(20, w, w, {"last_eval": {"eer": 0.10}}, best=True)
    mgr.save(30, w, w, {"last_eval": {"eer": 0.11}})
    assert resolve(tmp_path / "run").step == 20  # no average: the best
    averaged = CheckpointManager(tmp_path / "run" / "averaged", keep=1)
    averaged.save(30, w, {}, {"averaged_eval": {"eer": averaged_eer}}, best=True)
    assert resolve(tmp_path / "run").path.parent.name == chosen
    assert resolve(tmp_path / "run" / "checkpoints").step == 20  # asked for checkpoints/
    averaged.save(30, w, {}, {}, best=True)  # `learner.average` did not evaluate
    assert resolve(tmp_path / "run").path.parent.name == "checkpoints"


@pytest.mark.parametrize("pointer", ["{oops", '{"checkpoint": "../../etc"}', None])
def test_the_best_survives_a_damaged_or_missing_pointer(tmp_path, pointer):
    mgr = CheckpointManager(tmp_path, keep=1)
    w = {"0000/x": np.zeros(3)}
    for step in (1, 2, 3):
        mgr.save(step, w, w, {"n": step}, best=step == 2)
    if pointer is None:
        (tmp_path / "best.json").unlink()
    else:
        (tmp_path / "best.json").write_text(pointer)
    for step in (4, 5):  # retention runs with the pointer unreadable
        mgr.save(step, w, w, {"n": step})
    assert [c.step for c in mgr.all()] == [2, 5] and mgr.best().step == 2


def test_killing_a_writer_never_leaves_a_broken_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    rng = np.random.default_rng(0)
    for attempt in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        proc.stdout.readline()  # at least one save happened
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mgr = CheckpointManager(tmp_path)
        for ckpt in mgr.all():  # every visible checkpoint loads completely
            assert ckpt.state()["step"] == ckpt.step
            arrays = ckpt.arrays("weights")
            assert len(arrays) == 8 and all(a.shape == (256, 1024) for a in arrays.values())
        assert mgr.latest() is not None, attempt


def test_resaving_a_step_never_leaves_it_missing(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=3)
    w = {"0000/x": np.zeros(3)}
    mgr.save(4, w, w, {"reason": "periodic"})
    # A process killed between moving the old copy aside and renaming the new one in:
    os.rename(tmp_path / "ckpt-00000004", tmp_path / ".old-ckpt-00000004-999")
    assert [c.step for c in mgr.all()] == [4]  # recovered on the next look
    again = mgr.save(4, w, w, {"reason": "exit"})
    assert again.state()["reason"] == "exit" and not list(tmp_path.glob(".old-*"))


def test_a_reader_during_a_resave_never_breaks_the_save(tmp_path, monkeypatch):
    """Another process (a CLI resolving the run's best checkpoint) looks at the folder at the
    worst moment of a same-step re-save, between its two renames: it reads the set-aside copy
    and leaves the folder as it is, so the writer's second rename still succeeds."""
    from learner import checkpoint

    mgr = CheckpointManager(tmp_path, keep=3)
    w = {"0000/x": np.arange(3.0)}
    mgr.save(4, w, w, {"reason": "periodic"})
    reader = (
        "import sys; from learner.checkpoint import resolve; c = resolve(sys.argv[1]); "
        "print(c.step, c.state()['reason'], c.arrays('weights')['0000/x'].sum())"
    )
    seen = []
    real_rename = os.rename

    def rename_then_read(src, dst):
        real_rename(src, dst)
        if str(dst).rsplit("/", 1)[-1].startswith(".old-"):
            out = subprocess.run(
                [sys.executable, "-c", reader, str(tmp_path)],
                env={**os.environ, "PYTHONPATH": os.getcwd()},
                capture_output=True,
                text=True,
                check=True,
            )
            seen.append(out.stdout.split())

    monkeypatch.setattr(checkpoint.os, "rename", rename_then_read)
    again = mgr.save(4, w, w, {"reason": "exit"})
    assert seen == [["4", "periodic", "3.0"]]  # the reader got a whole checkpoint
    assert again.state()["reason"] == "exit"
    assert [c.path.name for c in mgr.all()] == ["ckpt-00000004"]


def test_the_exit_save_of_a_calibrated_step_keeps_its_calibration_and_cohort(tmp_path):
    # A time-limited run calibrates its best checkpoint at the end (learner.finish), then
    # the driver saves the exit checkpoint of the same step: that re-save dropped the
    # calibration.json, cohort.npz and any domain the step had, so the checkpoint a user
    # loads lost its end-of-run calibration and cohort (bench/calibration.py found it).
    mgr = CheckpointManager(tmp_path)
    w = {"w": np.ones(3, np.float32)}
    ckpt = mgr.save(10, w, {}, {"reason": "best"}, best=True)
    ckpt.write_extras({"cosine": {"kind": "cosine"}}, np.ones((4, 3), np.float32))
    (ckpt.path / "domain.json").write_text("{}")
    again = mgr.save(10, w, {}, {"reason": "exit"})
    assert again.state()["reason"] == "exit"
    assert again.calibrations() == {"cosine": {"kind": "cosine"}}
    assert again.cohort().shape == (4, 3) and (again.path / "domain.json").is_file()
    # Another step starts without them.
    other = mgr.save(11, w, {}, {"reason": "exit"})
    assert other.calibrations() == {} and other.cohort() is None


def test_a_full_disk_during_a_save_names_the_path_and_leaves_nothing_behind(tmp_path):
    """A write that fails part way (here a real file-size limit, RLIMIT_FSIZE, as a full disk
    would: the kernel refuses the write) gives a message with the checkpoint's path, no
    ``.tmp-ckpt-*`` folder stays, and the checkpoints before it are untouched."""
    import resource

    from learner.checkpoint import CheckpointError

    mgr = CheckpointManager(tmp_path, keep=3)
    small = {"0000/x": np.zeros(4, "float32")}
    mgr.save(1, small, small, {"n": 1})
    big = {"0000/x": np.zeros(1 << 20, "float32")}  # 4 MB: above the limit below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(CheckpointError) as err:
            mgr.save(2, big, big, {"n": 2})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(tmp_path / "ckpt-00000002") in str(err.value)
    assert not list(tmp_path.glob(".tmp-*")), list(tmp_path.iterdir())
    assert [c.step for c in mgr.all()] == [1]
    assert mgr.all()[0].arrays("weights")["0000/x"].shape == (4,)
