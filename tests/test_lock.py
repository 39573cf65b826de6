"""requirements.lock is the tested set: it must pin everything pyproject.toml asks for, at
versions pyproject.toml allows (refresh with scripts/lock.sh)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pinned() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert "==" in line and ";" not in line, f"requirements.lock: {line!r} is not name==version"
        name, version = line.split("==", 1)
        out[canonicalize_name(name)] = version.strip()
    return out


def test_the_lock_pins_every_dependency_at_a_version_pyproject_allows():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    lock = pinned()
    problems = []
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req.name} is not in requirements.lock")
        elif not req.specifier.contains(lock[name], prereleases=True):
            problems.append(f"{req.name}=={lock[name]} does not satisfy {req.specifier}")
        for extra in sorted(req.extras):  # ray[default], redis[hiredis]: their extras too
            if extra == "default" and name == "ray":
                assert "aiohttp" in lock, "ray[default]'s packages are missing from the lock"
    assert not problems, "requirements.lock and pyproject.toml disagree (scripts/lock.sh): " + (
        "; ".join(problems)
    )


def test_the_installed_set_is_the_locked_set():
    """What this environment runs is what the lock says (scripts/setup.sh installs with it)."""
    from importlib.metadata import distributions

    lock = pinned()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    differ = {n: (v, installed.get(n)) for n, v in lock.items() if installed.get(n) != v}
    assert not differ, f"installed versions differ from requirements.lock: {differ}"
