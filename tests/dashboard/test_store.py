"""The dashboard's store: which runs it opens, incremental series, its messages (real Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from cluster import metrics as M
from cluster.config import load_config
from cluster.metrics import MetricsWriter
from cluster.redis_server import EmbeddedRedis
from dashboard.app import Dashboard, allowed_hosts
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
    assert ":x@" not in message  # the password is redacted (cluster.redaction.public_url)
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


def test_a_planted_server_file_never_gets_the_runs_password(tmp_path, caplog):
    caplog.set_level("INFO")
    """``runs/<id>/redis/server.json`` naming another host: the dashboard must not send the
    run's password there (it starts the run's own server on loopback instead)."""
    import ipaddress
    import json
    import socket

    from cluster.redis_server import EmbeddedRedis, reachable_host

    runs = tmp_path / "runs"
    (runs / "r1" / "redis").mkdir(parents=True)
    (runs / "r1" / "config.yaml").write_text("preset: smoke\n")
    listener = socket.socket()  # a stranger's "server" on a non-loopback address of ours
    outward = reachable_host("0.0.0.0")
    if ipaddress.ip_address(outward).is_loopback:
        pytest.skip("this machine has no non-loopback address to plant")
    listener.bind((outward, 0))
    listener.listen(1)
    listener.settimeout(0.1)
    planted = {"port": listener.getsockname()[1], "pid": 1, "host": outward}
    (runs / "r1" / "redis" / "server.json").write_text(json.dumps(planted))
    board = Dashboard(RunsDirSource(runs))
    try:
        board.refresh("r1")
        with pytest.raises(OSError):
            listener.accept()  # nobody connected to the planted address
        assert "looking for the server on loopback only" in caplog.text
        served = json.loads((runs / "r1" / "redis" / "server.json").read_text())
        assert ipaddress.ip_address(served["host"]).is_loopback
    finally:
        listener.close()
        EmbeddedRedis(runs / "r1" / "redis").stop()


def test_a_store_folder_linked_outside_its_run_is_refused(tmp_path):
    from dashboard.store import StoreUnavailable

    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    (runs / "r2").mkdir(parents=True)
    elsewhere.mkdir()
    (runs / "r2" / "config.yaml").write_text("preset: smoke\n")
    (runs / "r2" / "redis").symlink_to(elsewhere, target_is_directory=True)
    board = Dashboard(RunsDirSource(runs))
    with pytest.raises(StoreUnavailable, match="resolves outside its run folder"):
        board.refresh("r2")
    assert list(elsewhere.iterdir()) == []  # no redis.conf, password or data written there


OUTPUTS = (
    "summary.children",
    "loss-graph.figure",
    "similarity-graph.figure",
    "eer-graph.figure",
    "timing-graph.figure",
    "producers-graph.figure",
    "run-message.children",
    "drawn.data",
)


@pytest.mark.parametrize(
    "run_id, log_scale, drawn",
    [
        (["r"], [], None),
        ({"a": 1}, [], None),
        (7, None, None),
        (None, 5, None),
        ("r", {"x": 1}, None),
        ("r", [], ["k"]),
        (None, True, None),
    ],
)
def test_forged_callback_inputs_get_the_pages_message_not_a_500(tmp_path, run_id, log_scale, drawn):
    """The page sends a run id (text), a list of texts and a text key; a forged request with
    a list, dict, int or bool in their place is answered with the page's own error text."""
    board = Dashboard(RunsDirSource(tmp_path / "runs"))
    client = board.app.server.test_client()
    client.get("/")  # the app's first request sets up its callbacks
    payload = {
        "output": ".." + "...".join(OUTPUTS) + "..",
        "outputs": [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in OUTPUTS],
        "inputs": [
            {"id": "tick", "property": "n_intervals", "value": 1},
            {"id": "run", "property": "value", "value": run_id},
            {"id": "log-scale", "property": "value", "value": log_scale},
        ],
        "state": [{"id": "drawn", "property": "data", "value": drawn}],
        "changedPropIds": ["run.value"],
    }
    answer = client.post("/_dash-update-component", json=payload)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    message = answer.get_json()["response"]["run-message"]["children"]
    assert message.startswith("Bad request:")


@pytest.mark.parametrize(
    ("bound", "host", "status"),
    [
        ("127.0.0.1", "127.0.0.1:8050", 200),
        ("127.0.0.1", "localhost:8050", 200),
        ("127.0.0.1", "[::1]:8050", 200),
        ("127.0.0.1", "evil.example:8050", 403),  # DNS rebinding: a site's name, our address
        ("127.0.0.1", "127.0.0.1.evil.example", 403),
        ("10.1.2.3", "10.1.2.3:8050", 200),  # --host says which address it serves
        ("10.1.2.3", "evil.example", 403),
    ],
)
def test_only_loopback_names_or_the_served_host_reach_the_dashboard(tmp_path, bound, host, status):
    """The dashboard answered a ``Host:`` header of any site with 200, so a page of another
    site whose name was rebound to 127.0.0.1 could read it. Only loopback names and the
    address ``--host`` serves (and ``--allow-host`` names) are answered."""
    board = Dashboard(RunsDirSource(tmp_path), allowed_hosts=allowed_hosts(bound))
    client = board.app.server.test_client()
    assert client.get("/", headers={"Host": host}).status_code == status
    if status == 403:
        assert b"not served under the name" in client.get("/", headers={"Host": host}).data
