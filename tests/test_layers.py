"""The repository's rooms: which package may import which (docs/architecture.md, "Packages"),
read from the source with ``ast``: every import, at the top of a module or inside a function.
No module-level import cycle between our modules, no lower room importing a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("cluster", "workers", "learner", "dashboard")

# room -> the rooms it may import (itself included); the longest matching room applies
MAY_IMPORT = {
    "cluster": ("cluster",),
    "workers": ("cluster", "workers"),
    "learner.scoring": ("cluster", "workers", "learner.scoring"),
    "learner.inference": (
        "cluster",
        "workers",
        "learner.scoring",
        "learner.inference",
        "learner.checkpoint",
        "learner.model",
    ),
    "learner.commands": ("cluster", "workers", "learner"),
    # training; a thin ``python -m learner.<command>`` entry may also import its command
    "learner": ("cluster", "workers", "learner"),
    "dashboard": ("cluster", "dashboard"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] in TOPS}


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in TOPS for p in sorted((ROOT / top).rglob("*.py"))}


def room_of(module: str) -> str:
    for room in sorted(MAY_IMPORT, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    raise AssertionError(f"{module} is in no room of MAY_IMPORT")


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def is_thin_entry(path: Path) -> bool:
    """``learner/<command>.py``: a docstring, imports and ``if __name__ == "__main__"`` only."""
    body = ast.parse(path.read_text()).body
    allowed = (ast.Import, ast.ImportFrom, ast.If, ast.Expr)
    return all(isinstance(n, allowed) for n in body) and len(body) <= 5


def layer_violations(mods: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in mods.items():
        room = room_of(name)
        for imported in sorted(our_imports(path, top_level_only=False)):
            ok = any(within(imported, allowed) for allowed in MAY_IMPORT[room])
            if room == "learner" and within(imported, "learner.commands"):
                ok = is_thin_entry(path)  # training code never imports a user command
            if room == "learner" and within(imported, "learner.inference"):
                ok = False  # inference builds on training's checkpoints, not the other way
            if not ok:
                bad.append(f"{name} ({room}) imports {imported}")
    return bad


def import_cycles(mods: dict[str, Path]) -> list[list[str]]:
    """Strongly connected groups of more than one module in the module-level import graph."""
    graph = {m: {i for i in our_imports(p, True) if i in mods and i != m} for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_every_package_imports_only_the_rooms_below_it():
    mods = modules()
    assert len(mods) > 80  # the walk found the code
    assert layer_violations(mods) == []


def test_no_module_level_import_cycle():
    assert import_cycles(modules()) == []


def test_the_check_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks themselves can fail: a planted upward arrow and a planted cycle are found."""
    fake = tmp_path / "repo"
    for rel, text in {
        "cluster/__init__.py": "",
        "cluster/a.py": "from cluster import b\nimport workers.x\n",
        "cluster/b.py": "import cluster.a\n",
        "workers/__init__.py": "",
        "workers/x.py": "def f():\n    from dashboard import app\n",
        "learner/__init__.py": "",
        "learner/train.py": "from learner.commands.verify import main\nx = 1\ny = 2\nz = 3\nw = 4\n",
        "learner/commands/__init__.py": "",
        "learner/commands/verify.py": "def main(): ...\n",
        "dashboard/__init__.py": "",
        "dashboard/app.py": "",
    }.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake)
    mods = modules()
    bad = layer_violations(mods)
    assert "cluster.a (cluster) imports workers.x" in bad
    assert "workers.x (workers) imports dashboard.app" in bad
    assert "learner.train (learner) imports learner.commands.verify" in bad
    assert import_cycles(mods) == [["cluster.a", "cluster.b"]]
