"""Integration: `python -m learner` end to end, as a user runs it (real Ray, TF, Redis)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil
import pytest

from cluster import metrics as M
from cluster.redis_server import EmbeddedRedis
from learner.checkpoint import CheckpointManager

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


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


def stored(run_dir: Path) -> dict:
    """What the run's embedded store holds: train steps, meta, producer entries, events."""
    server = EmbeddedRedis(run_dir / "redis")
    url = server.start()
    try:
        client = M.connect(url)
        run_id = run_dir.name
        return {
            "steps": [int(f["step"]) for _, f in client.xrange(M.train_key(run_id))],
            "meta": client.hgetall(M.meta_key(run_id)),
            "producers": client.xlen(M.producers_key(run_id)),
            "events": [f for _, f in client.xrange(M.events_key(run_id))],
        }
    finally:
        server.stop()


def train_steps(run_dir: Path) -> tuple[list[int], str]:
    s = stored(run_dir)
    return s["steps"], s["meta"].get("status")


def test_train_then_resume_continues_weights_and_metrics(tmp_path):
    first = run(learner_cmd("--runs", str(tmp_path), "--run-id", "r1"))
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "r1"
    ckpt = CheckpointManager(run_dir / "checkpoints").latest()
    assert ckpt.step == 6 and ckpt.state()["reason"] == "exit"
    assert "held-out EER" in first.stderr and "trained to step 6" in first.stderr
    # a clean end says nothing of the producers' loops it ended, nor TensorFlow's CUDA search
    for noise in ("ProducerActor.run failed", "killed by ray.kill", "cuInit", "absl::"):
        assert noise not in first.stderr, noise
    # the driver's scan, which the producers and the learner loaded instead of scanning
    from workers.corpus import SpeakerDatabase

    assert len(SpeakerDatabase.load(run_dir / "corpus.npz").utterances) > 0
    first_store = stored(run_dir)
    assert first_store["steps"] == list(range(1, 7))
    assert first_store["meta"]["status"] == "finished"
    assert first_store["producers"] > 0  # producers write their metrics to the run's store

    before = (run_dir / "config.yaml").read_text()
    clash = run(learner_cmd("--resume", str(run_dir), "--set", "features.n_mels=40"))
    assert clash.returncode == 2 and "cannot change features" in clash.stderr
    assert (run_dir / "config.yaml").read_text() == before  # refused before it was rewritten
    other_loss = run(learner_cmd("--resume", str(run_dir), "--set", "learner.loss=aam+triplet"))
    assert other_loss.returncode == 2 and "cannot change learner.loss" in other_loss.stderr
    assert (run_dir / "config.yaml").read_text() == before
    # a hand edit of the run's config.yaml (the model's width) is found before anything
    # starts: it failed after 18 s inside Ray's errors with exit 1, and rewrote config.yaml
    edited = before.replace("width: 0.0625", "width: 0.125")
    assert edited != before
    (run_dir / "config.yaml").write_text(edited)
    hand = run(learner_cmd("--resume", str(run_dir), "--set", "learner.lr=0.002"))
    assert hand.returncode == 2, hand.stderr[-3000:]
    assert "model.width" in hand.stderr and "config.yaml" in hand.stderr
    assert "Traceback" not in hand.stderr and "ray" not in hand.stderr.lower()
    assert (run_dir / "config.yaml").read_text() == edited  # nothing rewritten
    (run_dir / "config.yaml").write_text(before)

    again = run(learner_cmd("--resume", str(run_dir), "--steps", "9"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert CheckpointManager(run_dir / "checkpoints").latest().step == 9
    steps, _ = train_steps(run_dir)
    assert steps == list(range(1, 10))  # the same series, continued
    # TensorBoard sees the same run (tensorboard --logdir runs): every 10th step and each
    # evaluation, across both sessions (smoke evaluates at steps 3, 6, 9).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/eer_pct")][-3:] == [3, 6, 9]


def test_a_time_limited_run_ends_with_its_averaged_model_and_says_so(tmp_path):
    out = run(
        learner_cmd(
            "--runs",
            str(tmp_path),
            "--run-id",
            "av",
            "--set",
            "learner.max_steps=100000",
            "--set",
            "learner.max_minutes=0.1",
            "--set",
            "learner.checkpoint_every=1",
            "--set",
            "learner.average_last=2",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    averaged = CheckpointManager(tmp_path / "av" / "averaged").latest()
    state = averaged.state()
    last = CheckpointManager(tmp_path / "av" / "checkpoints").latest().step
    assert state["averaged_from"] == [f"ckpt-{last - 1:08d}", f"ckpt-{last:08d}"]
    line = [x for x in out.stderr.splitlines() if x.startswith(f"trained to step {last} ")]
    assert line and f"averaged model {100 * state['averaged_eval']['eer']:.1f}%" in line[-1]


def test_bad_input_exits_cleanly(tmp_path):
    missing = run(learner_cmd("--runs", str(tmp_path), "--data", str(tmp_path / "nope")))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = run(learner_cmd("--runs", str(tmp_path), "--set", "learner.lrr=1"))
    assert bad.returncode == 2 and "unknown key learner.lrr" in bad.stderr
    name = f"escaped-{os.getpid()}-{time.time_ns()}"
    escape = run(learner_cmd("--runs", str(tmp_path), "--run-id", f"../../{name}"))
    assert escape.returncode == 2 and "not a path" in escape.stderr
    assert not (tmp_path.parent.parent / name).exists()


def flat_corpus(
    root: Path, speakers: int, utterances: int, silent: bool = False, voiced: int = 0
) -> Path:
    """``silent``: every file but the first ``voiced`` of speaker 0 is zeros."""
    import numpy as np
    import soundfile as sf

    from tests.fakes import write_wav

    for s in range(speakers):
        for u in range(utterances):
            path = root / f"spk{s}" / f"u{u}.wav"
            if silent and not (s == 0 and u < voiced):  # a valid header, zeros inside
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, np.zeros(16000, np.float32), 16000)
            else:
                write_wav(path, 1.0, f0=100 + 30 * s)
    return root


def test_a_silent_corpus_is_refused_at_start_and_leaves_no_run_folder(tmp_path):
    corpus = flat_corpus(tmp_path / "silent", 4, 3, silent=True)
    t0 = time.time()
    out = run(learner_cmd("--runs", str(tmp_path / "runs"), "--run-id", "s", "--data", str(corpus)))
    assert out.returncode == 2, out.stderr[-3000:]
    assert re.search(r"no speech found in (\d+) training files .*\(no_speech: \1\)", out.stderr)
    assert "Traceback" not in out.stderr
    assert time.time() - t0 < 60  # before Ray, Redis or the learner start
    assert not (tmp_path / "runs" / "s").exists()


def test_a_runs_folder_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    out = run(learner_cmd("--runs", str(tmp_path / "a-file" / "runs")))
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: cannot create the run folder under" in out.stderr
    assert "Traceback" not in out.stderr


def test_producers_that_all_fail_stop_the_run_with_their_error(tmp_path):
    """Only one speaker's two files have speech: the driver's first look finds speech, and
    only the producers find out, at run time, that no triplet can be made. The run must
    stop with their error and exit code 2, not wait for data forever."""
    corpus = flat_corpus(tmp_path / "silent", 4, 3, silent=True, voiced=2)
    args = ["--runs", str(tmp_path), "--run-id", "f", "--data", str(corpus), "--steps", "50"]
    t0 = time.time()
    out = run(learner_cmd(*args, "--set", "data.eval_fraction=0"), timeout=180)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "producer(s) failed" in out.stderr and "cannot sample triplets" in out.stderr
    assert time.time() - t0 < 150
    s = stored(tmp_path / "f")
    assert s["meta"]["status"] == "failed" and "cannot sample triplets" in s["meta"]["error"]
    assert any(e["kind"] == "error" for e in s["events"])


def test_a_corpus_without_anchor_speakers_is_refused_at_start(tmp_path):
    corpus = flat_corpus(tmp_path / "c", 3, 1)  # three speakers, one utterance each
    out = run(learner_cmd("--runs", str(tmp_path), "--data", str(corpus)), timeout=120)
    assert out.returncode == 2 and "cannot sample triplets" in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize(
    "sig, code, to_group",
    [
        (signal.SIGINT, 130, True),  # a terminal's Ctrl-C: the whole foreground group
        (signal.SIGTERM, 143, False),  # a scheduler (Slurm, Kubernetes, ray stop): the driver
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_checkpoints_and_leaves_no_process(tmp_path, sig, code, to_group):
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
        # A terminal's foreground process takes Ctrl-C; a test runner started in the
        # background of a script (`pytest &`) passes SIGINT on ignored, and Python then
        # never raises KeyboardInterrupt: the driver would train on.
        preexec_fn=default_sigint,
    )
    try:
        interrupted(proc, tmp_path, sig, code, to_group)
    finally:
        if proc.poll() is None:  # a failed check must not leave a run training under the suite
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted(
    proc: subprocess.Popen, tmp_path: Path, sig: int, code: int, to_group: bool
) -> None:
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
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, "".join(lines[-20:]) + out[-3000:]
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


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    import random

    proc = subprocess.Popen(
        learner_cmd(
            "--runs",
            str(tmp_path),
            "--run-id",
            "k",
            "--steps",
            "100000",
            "--set",
            "learner.checkpoint_every=2",
            "--set",
            "learner.eval_every=0",
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "REDIS_URL": ""},
    )
    ckpts = CheckpointManager(tmp_path / "k" / "checkpoints")
    deadline = time.time() + 180
    while time.time() < deadline and ckpts.latest() is None:
        time.sleep(0.2)
    assert ckpts.latest() is not None, "no checkpoint within 3 minutes"
    # Anywhere in what follows: mid-step, mid-checkpoint, mid-metrics-flush.
    time.sleep(random.uniform(0.0, 4.0))
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its learner and producers
    proc.wait(timeout=30)
    for c in ckpts.all():  # nothing half-written is visible
        assert c.state()["step"] == c.step and len(c.arrays("weights")) > 10
    last = ckpts.latest().step
    again = run(learner_cmd("--resume", str(tmp_path / "k"), "--steps", str(last + 3)))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr
    assert ckpts.latest().step == last + 3
    steps, status = train_steps(tmp_path / "k")
    assert status == "finished"
    debug = again.stderr[-4000:] + (tmp_path / "k" / "redis" / "redis.log").read_text()[-4000:]
    assert steps == list(range(1, last + 4)), debug  # every step once, in order
    time.sleep(1)
    assert not [
        p
        for p in family
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


def test_a_killed_learner_is_restarted_from_its_checkpoint(tmp_path):
    proc = subprocess.Popen(
        learner_cmd(
            "--runs", str(tmp_path), "--run-id", "lr", "--steps", "40",
            "--set", "learner.checkpoint_every=5", "--set", "learner.eval_every=0",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "REDIS_URL": ""},
    )  # fmt: skip
    ckpts = CheckpointManager(tmp_path / "lr" / "checkpoints")
    deadline = time.time() + 180
    while time.time() < deadline and ckpts.latest() is None:
        time.sleep(0.2)
    assert ckpts.latest() is not None, "no checkpoint within 3 minutes"
    learners = [
        c
        for c in psutil.Process(proc.pid).children(recursive=True)
        if "LearnerActor" in " ".join(c.cmdline())
    ]
    assert len(learners) == 1
    learners[0].kill()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "the learner died" in out and "restart 1 of 2" in out
    s = stored(tmp_path / "lr")
    assert s["steps"] == list(range(1, 41)) and s["meta"]["status"] == "finished"
    assert [e for e in s["events"] if e["kind"] == "restart"]


def test_the_runs_embedded_redis_killed_mid_run_is_started_again(tmp_path):
    """kill -9 of the run's own redis-server: training went on, but the server was never
    started again, the metrics of the rest of the run were lost and the status stayed
    "running". The driver starts it again on its port from its data: every step once, the
    status true."""
    proc = subprocess.Popen(
        learner_cmd(
            "--runs", str(tmp_path), "--run-id", "kr", "--steps", "60",
            "--set", "learner.eval_every=0",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "REDIS_URL": ""},
    )  # fmt: skip
    lines = []
    while True:
        line = proc.stdout.readline()
        lines.append(line)
        assert line, "the run ended before training started:\n" + "".join(lines)[-3000:]
        if "INFO learner: step" in line:
            break
    pid = json.loads((tmp_path / "kr" / "redis" / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    out = "".join(lines) + out
    assert proc.returncode == 0, out[-3000:]
    assert "embedded Redis stopped" in out, out[-3000:]
    steps, status = train_steps(tmp_path / "kr")
    assert steps == list(range(1, 61)) and status == "finished", out[-3000:]


def test_the_progress_shows_the_time_left_by_whichever_ends_the_run_first():
    """A run with a 12-minute budget showed ``1319/6000 [12:04<42:52]`` and ended at 12
    minutes: the time left is now the budget's when it comes before max_steps."""
    from learner.__main__ import clock, time_left

    assert clock(time_left(1319, 6000, 0, 604, 0)) == "35:44"  # by steps alone
    assert clock(time_left(1100, 6000, 0, 600, 720)) == "02:00"  # the budget comes first
    assert clock(time_left(5990, 6000, 0, 700, 7200)) == "00:01"  # max_steps comes first
    assert clock(time_left(300, 900, 300, 0, 0)) == "?"  # resumed, no step yet
    assert clock(4000) == "1:06:40"


def test_the_learners_place_is_reserved_with_its_gpu_and_node():
    """What the placement group keeps for the learner (GPU paths checked without a GPU)."""
    from learner.launch import learner_bundle

    assert learner_bundle({"num_cpus": 1}) == {"CPU": 1.0}
    gpu = {"num_cpus": 1, "num_gpus": 1, "resources": {"learner": 1}}
    assert learner_bundle(gpu) == {"CPU": 1.0, "GPU": 1.0, "learner": 1.0}


def test_a_learner_the_cluster_cannot_place_is_said_not_waited_for(tmp_path):
    """A learner asking for a GPU on a machine without one can never be placed: the run
    stops after learner.start_timeout with what it needs, exit code 1 (it waited without
    a word)."""
    t0 = time.time()
    out = run(
        learner_cmd(
            "--runs", str(tmp_path), "--run-id", "nogpu", "--device", "gpu",
            "--set", "learner.start_timeout=5",
        ),
        timeout=180,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert "cannot place the learner" in out.stderr and "'GPU': 1.0" in out.stderr
    assert time.time() - t0 < 150
    assert train_steps(tmp_path / "nogpu")[1] == "failed"


def ray_children(proc: subprocess.Popen, name: str) -> list[psutil.Process]:
    return [
        c
        for c in psutil.Process(proc.pid).children(recursive=True)
        if name in " ".join(c.cmdline())
    ]


def test_chaos_producer_then_learner_then_redis_killed_never_hangs(tmp_path):
    """Two producers on two CPUs (one waits for a CPU), kill -9 a producer, then the learner
    (its CPU went to a restarted producer, and the new learner never started: no message, a
    SIGTERM that could not end the driver), then the run's Redis. The run must end, here
    finished with every step once, or with a clear error and exit code; never hang."""
    proc = subprocess.Popen(
        learner_cmd(
            "--runs", str(tmp_path), "--run-id", "chaos", "--steps", "400", "--producers", "2",
            "--set", "learner.checkpoint_every=5", "--set", "learner.eval_every=0",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "REDIS_URL": ""},
        start_new_session=True,
    )  # fmt: skip
    try:
        ckpts = CheckpointManager(tmp_path / "chaos" / "checkpoints")
        deadline = time.time() + 180
        while time.time() < deadline and ckpts.latest() is None:
            time.sleep(0.2)
        assert ckpts.latest() is not None, "no checkpoint within 3 minutes"
        producers = ray_children(proc, "ProducerActor")
        assert producers, "no producer process"
        producers[0].kill()
        time.sleep(1)
        learners = ray_children(proc, "LearnerActor")
        assert len(learners) == 1
        learners[0].kill()
        time.sleep(1)
        pid = json.loads((tmp_path / "chaos" / "redis" / "server.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run hung after the kills")
    if proc.returncode == 0:
        assert "restart 1 of 2" in out and "embedded Redis stopped" in out, out[-3000:]
        steps, status = train_steps(tmp_path / "chaos")
        assert steps == list(range(1, 401)) and status == "finished", out[-3000:]
    else:  # allowed: a clear error line and a failing exit code, after the driver ended
        assert "error:" in out, out[-3000:]


def test_redis_stopped_and_restarted_mid_run(tmp_path):
    server = EmbeddedRedis(tmp_path / "store")
    url = server.start(die_with_parent=False)
    port = urlsplit(url).port
    proc = subprocess.Popen(
        learner_cmd(
            "--runs",
            str(tmp_path),
            "--run-id",
            "rr",
            "--steps",
            "400",
            "--set",
            "learner.eval_every=0",
            "--redis",
            url,
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while True:
        line = proc.stdout.readline()
        assert line, "the run ended before training started"
        if "INFO learner: step" in line:
            break
    server.stop()  # Redis gone mid-run
    time.sleep(3)
    server.start(port=port, die_with_parent=False)  # back, same data
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert "is unreachable" in out and "Redis is back" in out  # noticed, said once, recovered
    client = M.connect(url)
    steps = [int(f["step"]) for _, f in client.xrange(M.train_key("rr"))]
    assert steps == list(range(1, 401))  # nothing lost: buffered while Redis was down
    assert client.hget(M.meta_key("rr"), "status") == "finished"
    server.stop()


def test_a_redis_password_in_the_config_is_used_but_never_written(tmp_path):
    server = EmbeddedRedis(tmp_path / "store")
    url = server.start(die_with_parent=False)
    secret = urlsplit(url).password
    try:
        out = run(
            learner_cmd(
                "--runs",
                str(tmp_path),
                "--run-id",
                "pw",
                "--steps",
                "3",
                "--set",
                f"metrics.redis_url={url}",
                "--set",
                "learner.eval_every=0",
            )
        )
        assert out.returncode == 0, out.stderr[-3000:]
        client = M.connect(url)
        assert [int(f["step"]) for _, f in client.xrange(M.train_key("pw"))] == [1, 2, 3]
        meta = client.hgetall(M.meta_key("pw"))
        assert meta["status"] == "finished" and secret not in json.dumps(meta)
        written = [f for f in (tmp_path / "pw").rglob("*") if f.is_file()]
        assert any(f.name == "state.json" for f in written)
        assert not [f for f in written if secret.encode() in f.read_bytes()]
        assert secret not in out.stderr
    finally:
        server.stop()


def test_fine_tuning_starts_from_a_run_keeps_its_network_and_resumes(tmp_path):
    from cluster.config import load_config
    from learner.checkpoint import resolve

    parent = run(learner_cmd("--runs", str(tmp_path), "--run-id", "parent"))
    assert parent.returncode == 0, parent.stderr[-3000:]
    parent_ckpt = resolve(tmp_path / "parent")
    # The run lists the speakers it trained on and the ones its EER and calibration came from.
    from cluster.runs import RunDir

    listed = RunDir(tmp_path / "parent").read_speakers()
    assert listed["corpus"] == "synthetic" and listed["held_out"] and listed["training"]
    assert not set(listed["held_out"]) & set(listed["training"])
    assert len(listed["held_out"]) == parent_ckpt.state()["config"]["synthetic"]["speakers"] - len(
        listed["training"]
    )
    tune = learner_cmd(
        "--runs", str(tmp_path), "--run-id", "ft", "--init-from", str(tmp_path / "parent")
    )
    # The network and the features come from the parent: changing either is refused, named.
    for key in ("model.width=0.5", "features.n_mels=40"):
        refused = run([*tune, "--set", key])
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert key.split("=")[0] in refused.stderr
        assert not (tmp_path / "ft").exists()
    ft = run([*tune, "--steps", "4"])
    assert ft.returncode == 0, ft.stderr[-3000:]
    assert f"fine-tuning from {parent_ckpt.path.resolve()}" in ft.stderr
    cfg = load_config(str(tmp_path / "ft" / "config.yaml"))
    parent_cfg = load_config(str(tmp_path / "parent" / "config.yaml"))
    assert cfg.model == parent_cfg.model and cfg.features == parent_cfg.features
    assert cfg.learner.init_from == str(parent_ckpt.path.resolve())
    assert cfg.learner.init_fingerprint == parent_ckpt.fingerprint()
    assert cfg.learner.lr == 1e-4  # the fine-tuning overlay, not the preset's rate
    # It starts from the parent's weights: its first evaluation is the parent's model on the
    # same held-out speakers and trials.
    start = re.search(r"held-out EER ([\d.]+)% at the start", ft.stderr)
    parent_eer = parent_ckpt.state().get("averaged_eval", parent_ckpt.state()["last_eval"])["eer"]
    assert start and float(start.group(1)) == pytest.approx(100 * parent_eer, abs=0.051)
    # Lineage travels with the checkpoint's config; --resume continues it like any run.
    ft_ckpt = CheckpointManager(tmp_path / "ft" / "checkpoints").latest()
    assert ft_ckpt.state()["config"]["learner"]["init_fingerprint"] == parent_ckpt.fingerprint()
    again = run(learner_cmd("--resume", str(tmp_path / "ft"), "--steps", "6"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "resumed from" in again.stderr
        and "fine-tuning from" not in again.stderr.split("resumed from")[1]
    )
    steps, status = train_steps(tmp_path / "ft")
    assert steps == list(range(1, 7)) and status == "finished"
    assert (
        load_config(str(tmp_path / "ft" / "config.yaml")).learner.init_from == cfg.learner.init_from
    )


def test_resume_on_a_read_only_filesystem_is_one_line_and_exit_2(tmp_path, capsys):
    """A real read-only bind mount of a run folder: --resume said nothing useful (a
    traceback from the config rewrite); now one line naming the folder, exit code 2,
    before Ray starts."""
    from cluster.config import load_config
    from cluster.runs import RunDir
    from learner.__main__ import main

    cfg = load_config("smoke")
    src = RunDir.create(tmp_path / "src", cfg, "r1")
    w = {"0000/x": np.zeros(3, "float32")}
    CheckpointManager(src.checkpoints).save(3, w, w, {"config": cfg.to_dict()})
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", str(tmp_path / "src"), str(ro)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a read-only bind mount needs root with CAP_SYS_ADMIN: {mounted.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        code = main(["--resume", str(ro / "r1"), "--set", "learner.lr=0.002", "--no-progress"])
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "cannot write the run folder" in err and "Read-only file system" in err
    assert "Traceback" not in err
