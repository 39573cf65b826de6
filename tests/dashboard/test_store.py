"""The dashboard's store: which runs it opens, incremental series, its messages (real Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from cluster import metrics as M
from cluster.config import load_config
from cluster.metrics import MetricsWriter
from cluster.redis_server import EmbeddedRedis
from dashboard.app import Dashboard
from dashboard.store import RunsDirSource, RunSeries, UrlSource
from tests.conftest import write_run

pytestmark = pytest.mark.redis


def test_the_dashboard_only_opens_runs_of_its_folder(tmp_path):
    """A run id from the browser is checked against the runs folder: no path, no '..',
    no folder that is not a run; nothing is started for them."""
    from dashboard.app import Dashboard
    from dashboard.store import StoreUnavailable

    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    (runs / "good" / "config.yaml").write_text("preset: smoke\n")
    (runs / "plain").mkdir()  # a folder, but not a run
    outside = tmp_path / "outside"
    (outside / "redis").mkdir(parents=True)
    (outside / "config.yaml").write_text("preset: smoke\n")
    board = Dashboard(RunsDirSource(runs))
    for bad in ("../outside", str(outside), "plain", "good/../../outside", "", None, "x" * 500):
        with pytest.raises(StoreUnavailable):
            board.refresh(bad)
    assert not list((outside / "redis").iterdir()) and not (runs / "plain" / "redis").exists()
    assert list(board.series) == []  # nothing kept for refused ids
    try:
        series = board.refresh("good")  # a real run's store is started and read
        assert series.run_id == "good" and (runs / "good" / "redis" / "redis.conf").exists()
    finally:
        from cluster.redis_server import EmbeddedRedis

        EmbeddedRedis(runs / "good" / "redis").stop()


def test_series_reads_incrementally(redis_server):
    _, url = redis_server
    write_run(url, "inc", 120)
    s = RunSeries("inc")
    client = M.connect(url)
    assert s.refresh(client) > 120
    assert s.steps() == 120
    assert s.refresh(client) == 0  # nothing new: nothing read
    write_run(url, "inc", 30, start=120, evals=False)
    assert s.refresh(client) == 33  # 30 steps + 3 producer entries
    assert s.steps() == 150 and s.train.array("step")[-1] == 150
    assert s.checkpoints() == [50, 100]


def test_dashboard_messages(tmp_path, redis_server):
    empty = Dashboard(RunsDirSource(tmp_path / "none"))
    assert empty.run_options() == (
        [],
        f"No runs yet in run directories under "
        f"{(tmp_path / 'none').resolve()}. "
        "Start one with: python -m learner",
    )
    gone = Dashboard(UrlSource("redis://:x@127.0.0.1:1/0"))
    options, message = gone.run_options()
    assert options is None and "cannot reach Redis at redis://127.0.0.1:1/0" in message
    assert ":x@" not in message  # the password is redacted (cluster.metrics.public_url)
    _, url = redis_server
    MetricsWriter(url, "fresh").meta(started_at=time.time(), status="starting")
    board = Dashboard(UrlSource(url))
    options, message = board.run_options()
    assert options[0]["value"] == "fresh" and message == ""
    from dashboard.figures import summary_line

    assert "no training steps yet" in summary_line(board.refresh("fresh"))


def test_runs_dir_source_starts_the_persisted_store(tmp_path):
    from cluster.runs import RunDir

    run = RunDir.create(tmp_path / "runs", load_config("smoke"), "r-old")
    server = EmbeddedRedis(run.redis_dir)
    url = server.start()
    write_run(url, "r-old", 20)
    server.stop()  # the training process is gone
    source = RunsDirSource(tmp_path / "runs")
    assert [r["id"] for r in source.runs()] == ["r-old"]
    clients = []
    # Started from a thread that then ends, as a Dash request handler does. PDEATHSIG follows
    # the forking thread, so a server forked there directly would die with the request.
    handler = threading.Thread(target=lambda: clients.append(source.client_for("r-old")))
    handler.start()
    handler.join()
    time.sleep(1.0)
    assert EmbeddedRedis(run.redis_dir).running_url() is not None
    s = RunSeries("r-old")
    s.refresh(clients[0])  # the persisted data, served again
    assert s.steps() == 20
    EmbeddedRedis(run.redis_dir).stop()
