"""Integration: `python -m learner` end to end, as a user runs it (real Ray, TF, Redis)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster import metrics as M
from cluster.redis_server import EmbeddedRedis
from learner.checkpoint import CheckpointManager

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def learner_cmd(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "learner",
        "--preset",
        "smoke",
        "--no-progress",
        "--cpus",
        "2",
        *args,
    ]


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "REDIS_URL": ""},
    )


def train_steps(run_dir: Path) -> list[int]:
    server = EmbeddedRedis(run_dir / "redis")
    url = server.start()
    try:
        entries = M.connect(url).xrange(M.train_key(run_dir.name))
        status = M.connect(url).hget(M.meta_key(run_dir.name), "status")
    finally:
        server.stop()
    return [int(f["step"]) for _, f in entries], status


def test_train_then_resume_continues_weights_and_metrics(tmp_path):
    first = run(learner_cmd("--runs", str(tmp_path), "--run-id", "r1"))
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "r1"
    ckpt = CheckpointManager(run_dir / "checkpoints").latest()
    assert ckpt.step == 6 and ckpt.state()["reason"] == "exit"
    assert "held-out EER" in first.stderr and "trained to step 6" in first.stderr
    steps, status = train_steps(run_dir)
    assert steps == list(range(1, 7)) and status == "finished"

    again = run(learner_cmd("--resume", str(run_dir), "--steps", "9"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert CheckpointManager(run_dir / "checkpoints").latest().step == 9
    steps, _ = train_steps(run_dir)
    assert steps == list(range(1, 10))  # the same series, continued


def test_bad_input_exits_cleanly(tmp_path):
    missing = run(learner_cmd("--runs", str(tmp_path), "--data", str(tmp_path / "nope")))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = run(learner_cmd("--runs", str(tmp_path), "--set", "learner.lrr=1"))
    assert bad.returncode == 2 and "unknown key learner.lrr" in bad.stderr


def test_ctrl_c_checkpoints_and_leaves_no_process(tmp_path):
    proc = subprocess.Popen(
        learner_cmd(
            "--runs",
            str(tmp_path),
            "--run-id",
            "int",
            "--steps",
            "100000",
            "--set",
            "learner.checkpoint_every=0",
            "--set",
            "learner.eval_every=0",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "REDIS_URL": ""},
    )
    deadline = time.time() + 180
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "INFO learner: step" in line:
            break
    else:
        proc.kill()
        pytest.fail("training never started:\n" + "".join(lines[-40:]))
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines[-20:]) + out[-3000:]
    assert "interrupted: writing a checkpoint" in out
    ckpt = CheckpointManager(tmp_path / "int" / "checkpoints").latest()
    assert ckpt is not None and ckpt.step > 0 and ckpt.state()["reason"] == "exit"
    time.sleep(2)
    alive = [
        p
        for p in family
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], [psutil.Process(p).cmdline()[:3] for p in alive]
    _, status = train_steps(tmp_path / "int")
    assert status == "interrupted"
    assert (
        json.loads((tmp_path / "int" / "checkpoints" / ckpt.path.name / "state.json").read_text())[
            "step"
        ]
        == ckpt.step
    )
