"""Component layer: the metrics writer and the dashboard's store against a real Redis server."""

from __future__ import annotations

import ipaddress
import json
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis

from cluster import metrics as M
from cluster.config import load_config
from cluster.config_builder import ConfigError
from cluster.metrics import MetricsWriter
from cluster.redis_server import EmbeddedRedis
from cluster.series_rewind import resume_series, rewind
from dashboard.store import RunSeries
from tests.conftest import write_run

pytestmark = pytest.mark.redis


def test_embedded_server_is_loopback_and_password_protected(redis_server):
    server, url = redis_server
    port = urlsplit(url).port
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).set("x", 1)  # no password: refused
    client = M.connect(url)
    conf = server.dir / "redis.conf"
    assert "bind 127.0.0.1\n" in conf.read_text()
    assert client.info("server")["config_file"] == str(conf.resolve())
    assert oct((server.dir / "password").stat().st_mode & 0o777) == "0o600"
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    assert server.running_url() == url
    # Even with the password, nobody moves the data folder at run time (the classic way
    # from a Redis password to writing files anywhere), loads modules or debugs.
    for command in (("CONFIG", "SET", "dir", "/tmp"), ("MODULE", "LIST"), ("DEBUG", "SLEEP", "0")):
        with pytest.raises(redis.ResponseError):
            client.execute_command(*command)


def test_a_planted_password_file_is_refused(tmp_path):
    from cluster.redis_server import EmbeddedRedis

    folder = tmp_path / "redis"
    folder.mkdir()
    planted = folder / "password"
    planted.write_text('x"\nmaxclients 1\nrequirepass "y')
    planted.chmod(0o600)
    with pytest.raises(RuntimeError, match="not written by voice-embeddings"):
        EmbeddedRedis(folder).start()
    assert not (folder / "redis.conf").exists() and not (folder / "server.json").exists()
    planted.write_text("A" * 32)
    planted.chmod(0o644)  # readable by others: not ours either
    with pytest.raises(RuntimeError, match="not written by voice-embeddings"):
        EmbeddedRedis(folder).start()


@pytest.mark.parametrize("host", ["127.0.0.2", "203.0.113.9", "127.0.0.1"])
def test_a_planted_server_file_never_gets_the_password(redis_server, tmp_path, host):
    """A ``server.json`` naming another listener (any host: a non-loopback one used to fall
    back to 127.0.0.1 on its port) must not receive ``AUTH``: the password goes only to the
    redis-server that serves this folder's own redis.conf, found by its pid and port."""
    import socket
    import threading

    from cluster.redis_server import EmbeddedRedis

    real, url = redis_server
    listen_on = host if host.startswith("127.") else "127.0.0.1"
    listener = socket.socket()
    listener.bind((listen_on, 0))
    listener.listen(4)
    listener.settimeout(3)
    port = listener.getsockname()[1]
    heard = []

    def answer() -> None:  # a listener that talks like Redis would, to see what it is sent
        try:
            while True:
                conn, _ = listener.accept()
                conn.settimeout(1)
                try:
                    heard.append(conn.recv(4096))
                    conn.sendall(b"+OK\r\n")
                    heard.append(conn.recv(4096))
                except OSError:
                    pass
                conn.close()
        except OSError:
            return

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    recorded = json.loads((real.dir / "server.json").read_text())
    try:
        # the real server's pid, another port: a file the attacker can write
        planted = {"port": port, "pid": recorded["pid"], "host": host}
        (real.dir / "server.json").write_text(json.dumps(planted))
        assert EmbeddedRedis(real.dir).running_url() is None
        # nor is a second server started on the data the live one serves
        with pytest.raises(RuntimeError, match="does not name its port"):
            EmbeddedRedis(real.dir)._wait_for_previous(timeout=0.2)
    finally:
        (real.dir / "server.json").write_text(json.dumps(recorded))
        listener.close()
        thread.join(5)
    password = real.password.encode()
    assert not any(password in chunk for chunk in heard), heard
    assert EmbeddedRedis(real.dir).running_url() == url  # the real record is still found


def test_writer_schema_numbers_and_json(redis_server):
    _, url = redis_server
    write_run(url, "r1", 100)
    c = M.connect(url)
    assert c.xlen(M.train_key("r1")) == 100
    assert c.xlen(M.eval_key("r1")) == 2 and c.xlen(M.producers_key("r1")) == 10
    _, fields = c.xrange(M.train_key("r1"), count=1)[0]
    assert set(fields) == set(M.TRAIN_FIELDS)
    assert all(np.isfinite(float(v)) for v in fields.values())  # numbers, never pickles
    kind = c.xrange(M.events_key("r1"))[0][1]
    assert kind["kind"] == "checkpoint" and json.loads(kind["data"])["step"] == 50
    assert c.zrange(M.RUNS, 0, -1) == ["r1"]
    assert c.hget(M.meta_key("r1"), "status") == "running"


def test_stream_length_is_capped(redis_server):
    _, url = redis_server
    w = MetricsWriter(url, "cap", maxlen=100)
    for s in range(1000):
        w.train({"step": s, "loss": 1.0})
    w.close()
    assert M.connect(url).xlen(M.train_key("cap")) < 300  # MAXLEN ~ trims in whole nodes


def test_redis_stopped_and_restarted_mid_run(tmp_path, caplog):
    server = EmbeddedRedis(tmp_path / "r")
    url = server.start()
    port = urlsplit(url).port
    w = MetricsWriter(url, "run", buffer=1000, flush_interval=0.1)
    for s in range(10):
        w.train({"step": s, "loss": 0.5})
    assert w.flush()
    server.stop()
    waits = []
    for s in range(10, 40):  # training goes on while Redis is down: calls never block
        t0 = time.perf_counter()
        w.train({"step": s, "loss": 0.5})
        waits.append(time.perf_counter() - t0)
    # A call that touched the socket would wait for the 2 s connect timeout; the margin is wide
    # so that a noisy machine cannot fail this.
    assert max(waits) < 0.5
    assert not w.flush() and not w.connected
    assert caplog.text.count("is unreachable") == 1  # warned once
    server.start(port=port)  # same data folder: the first 10 come back from disk
    deadline = time.time() + 10
    while time.time() < deadline and not (w.connected and not w._buf):
        time.sleep(0.1)
    w.close()
    steps = [int(f["step"]) for _, f in M.connect(url).xrange(M.train_key("run"))]
    assert steps == list(range(40))
    server.stop()


def test_overflow_is_counted_not_silent(tmp_path):
    server = EmbeddedRedis(tmp_path / "r")
    url = server.start()
    port = urlsplit(url).port
    server.stop()
    w = MetricsWriter(url, "run", buffer=5, flush_interval=0.1)
    for s in range(12):
        w.train({"step": s, "loss": 0.5})
    assert w.dropped == 7
    server.start(port=port)
    w.close()
    c = M.connect(url)
    assert [int(f["step"]) for _, f in c.xrange(M.train_key("run"))] == list(range(7, 12))
    assert c.hget(M.meta_key("run"), "dropped") == "7"
    server.stop()


def test_a_rewound_series_has_every_step_once_in_order(redis_server):
    """After a kill and --resume, the driver deletes what was written after the checkpoint
    and the learner writes those steps again; a dashboard that already read the lost steps
    drops them too."""
    _, url = redis_server
    client = M.connect(url)
    write_run(url, "rw", 60)  # evals at 50; the learner dies after step 60
    series = RunSeries("rw")
    series.refresh(client)
    assert rewind(client, "rw", 40) == 20 + 1  # steps 41..60 and the eval at step 50
    assert [int(f["step"]) for _, f in client.xrange(M.train_key("rw"))] == list(range(1, 41))
    write_run(url, "rw", 30, start=40)  # the resumed learner: steps 41..70 again
    series.refresh(client)
    assert list(series.train.array("step")) == list(range(1, 71))
    assert list(series.eval.array("step")) == [50]
    assert series.train.array("loss")[-1] == float(
        client.xrevrange(M.train_key("rw"), count=1)[0][1]["loss"]
    )


def test_a_checkpoints_unsent_entries_are_added_once(redis_server):
    """A send that reached Redis but failed for the sender leaves entries both in the store
    and in the checkpoint's ``unsent_metrics``: they are not added twice, the missing ones are
    added in order, and entries that are not train/eval entries of a step are refused."""
    _, url = redis_server
    client = M.connect(url)
    write_run(url, "us", 12, evals=False)  # steps 1..12 reached the store
    unsent = [{"stream": "train", "fields": {"step": s, "loss": 0.5}} for s in range(11, 16)]
    unsent += [
        {"stream": "eval", "fields": {"step": 15, "eer": 0.2}},
        {"stream": "meta", "fields": {"step": 14}},  # not a series
        {"stream": "train", "fields": {"loss": 1.0}},  # no step
        {"stream": "train", "fields": {"step": 99, "loss": 1.0}},  # after the checkpoint
    ]
    assert resume_series(client, "us", 15, unsent) == (0, 4)  # train 13..15, eval 15
    assert [int(f["step"]) for _, f in client.xrange(M.train_key("us"))] == list(range(1, 16))
    assert [f["eer"] for _, f in client.xrange(M.eval_key("us"))] == ["0.2"]
    assert resume_series(client, "us", 15, unsent) == (0, 0)  # a second resume adds nothing


def test_embedded_redis_is_reachable_from_other_nodes_only_when_asked(tmp_path):
    """Default: loopback only, so a producer on another node cannot connect; with
    ``metrics.redis_bind=0.0.0.0`` it can, through this node's address, with the password."""
    from cluster.redis_server import reachable_host

    outward = reachable_host("0.0.0.0")
    assert not ipaddress.ip_address(outward).is_loopback, "this machine has no outward address"
    local = EmbeddedRedis(tmp_path / "local")
    port = urlsplit(local.start()).port
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host=outward, port=port, socket_connect_timeout=2).ping()
    local.stop()

    shared = EmbeddedRedis(tmp_path / "shared", bind="0.0.0.0")
    url = shared.start()
    assert urlsplit(url).hostname == outward  # what producers on other nodes are handed
    assert M.connect(url).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=outward, port=urlsplit(url).port, socket_connect_timeout=2).ping()
    # A reader finds it, on loopback: a reader sends the password to no other address.
    found = EmbeddedRedis(tmp_path / "shared").running_url()
    assert found is not None and urlsplit(found).port == urlsplit(url).port
    assert urlsplit(found).hostname == "127.0.0.1"
    shared.stop()
    with pytest.raises(ConfigError, match="metrics.redis_bind: 'everywhere' is not an IP"):
        load_config("smoke", ["metrics.redis_bind=everywhere"])
