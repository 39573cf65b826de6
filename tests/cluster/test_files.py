"""Atomic, durable writes: the bytes, then the rename, reach the disk."""

from __future__ import annotations

import os

import pytest

from cluster.files import atomic_write, atomic_write_text


def _record(monkeypatch) -> list[tuple[str, str]]:
    """(event, path) for every fsync and replace, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_a_durable_write_fsyncs_the_file_then_its_folder_after_the_rename(tmp_path, monkeypatch):
    events = _record(monkeypatch)
    target = tmp_path / "best.json"
    atomic_write_text(target, '{"checkpoint": "ckpt-00000100"}')
    assert target.read_text() == '{"checkpoint": "ckpt-00000100"}'
    kinds = [e for e, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].endswith(".tmp") and events[1][1] == str(target)
    assert events[2][1] == str(tmp_path)  # the folder, after the rename


def test_a_cache_write_skips_both_fsyncs(tmp_path, monkeypatch):
    events = _record(monkeypatch)
    atomic_write(tmp_path / "x.npy", lambda fh: fh.write(b"data"), fsync=False)
    assert [e for e, _ in events] == ["replace"]
