"""The package's shape, computed from its code: layers point one way, no import circle, no private name shared.

Layers, lowest first (docs/design.md draws them). A module may import from
its own layer and the layers below it, never from a layer above. Imports
inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "facefix"

#: Rooms, lowest first. A module belongs to the longest prefix listed here.
LAYERS = (
    ("facefix", "facefix.errors", "facefix.common"),
    ("facefix.photos",),
    ("facefix.faces",),
    ("facefix.quality",),
    ("facefix.profiles",),
    ("facefix.modelsets",),
    ("facefix.restorers",),
    ("facefix.training",),
    ("facefix.providers",),
    ("facefix.enroll",),
    ("facefix.restore",),
    ("facefix.review",),
    ("facefix.adapt", "facefix.learn"),
    ("facefix.evaluate",),
    ("facefix.cluster",),
    ("facefix.doctor",),
    ("facefix.api",),
    ("facefix.cli", "facefix.__main__"),
)

#: The one arrow allowed upward: the package's own lazy door to its API
#: (``facefix.restore_paths`` etc. resolve on first use, in ``__getattr__``).
ALLOWED_UP = {("facefix", "facefix.api")}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def _target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports() -> dict[str, set[tuple[str, tuple[str, ...]]]]:
    """module -> {(imported module, names imported from it)}."""
    graph: dict[str, set] = defaultdict(set)
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("facefix"):
                        graph[name].add((_target(alias.name), ()))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facefix"):
                assert node.level == 0, f"{name}: relative import"
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in MODULES:
                        graph[name].add((sub, ()))
                    else:
                        graph[name].add((_target(node.module), (alias.name,)))
    return graph


def layer(module: str) -> int:
    best, rank = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        pytest.fail(f"{module} is in no layer: add its room to LAYERS (and to docs/design.md)")
    return rank


GRAPH = imports()


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_no_arrow_runs_up():
    upward = sorted(
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, edges in GRAPH.items()
        for target, _ in edges
        if target != source and layer(target) > layer(source) and (source, target) not in ALLOWED_UP
    )
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    edges = {m: {t for t, _ in GRAPH.get(m, ()) if t != m} for m in MODULES}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert not _cycles(), "modules that import each other, directly or around a circle:\n" + "\n".join(
        " ⇄ ".join(c) for c in _cycles())


def test_no_private_name_crosses_a_module():
    crossing = sorted(
        f"{source} imports {name} from {target}"
        for source, edges in GRAPH.items()
        for target, names in edges
        for name in names
        if target != source and name.startswith("_") and not name.startswith("__")
    )
    assert not crossing, "private names used outside their module:\n" + "\n".join(crossing)


def test_the_checks_can_fail(monkeypatch):
    """The checker itself sees an upward arrow and a circle when there is one."""
    fake = {"facefix.photos.a": {("facefix.cli.main", ())}, "facefix.cli.main": {("facefix.photos.a", ())}}
    monkeypatch.setattr(__import__(__name__), "GRAPH", fake, raising=True)
    monkeypatch.setitem(MODULES, "facefix.photos.a", Path("a.py"))
    with pytest.raises(AssertionError, match="higher layer"):
        test_no_arrow_runs_up()
    with pytest.raises(AssertionError, match="circle"):
        test_no_import_circle()


#: docs/design.md: a cli module parses, calls the API and prints; past this it is doing the core's work.
CLI_MODULE_LINES = 160


def test_cli_modules_stay_small():
    long = {path.name: n for path in (ROOT / "cli").glob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > CLI_MODULE_LINES}
    assert not long, f"cli modules over {CLI_MODULE_LINES} lines (move the work into the core): {long}"
