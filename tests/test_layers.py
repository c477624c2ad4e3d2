"""The import graph of ``components/`` and ``harness/``, parsed with ``ast``: no import circles, every import
going down the declared layers (components < core < metrics < config, store < trial, report < driver < cli),
no function-local imports of project modules, and no Optuna or SQL where the layers promise none.

``python tests/test_layers.py`` prints the layers, the modules in each and what each imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "harness")

# bottom to top; a module belongs to the layer of its longest matching prefix
LAYERS = {
    "components": 0,
    "core": 1,
    "metrics": 2,
    "config": 3,
    "store": 3,
    "trial": 4,
    "report": 4,
    "driver": 5,
    "cli": 6,
}
PREFIXES = {
    "components": "components",
    "harness": "core",
    "harness.metrics": "metrics",
    "harness.config": "config",
    "harness.store": "store",
    "harness.trial": "trial",
    "harness.report": "report",
    "harness.results": "report",
    "harness.driver": "driver",
    "harness.cli": "cli",
    "harness.study": "cli",  # the entry points' shims: ``python -m harness.study`` etc.
    "harness.query": "cli",
    "harness.prepare": "cli",
    "harness.report.__main__": "cli",
}
# third-party packages a layer must not import (the trial runner: no Optuna, no database)
FORBIDDEN = {
    "components": {"optuna", "sqlalchemy", "harness"},
    "core": {"optuna", "sqlalchemy"},
    "metrics": {"optuna", "sqlalchemy"},
    "config": {"optuna", "sqlalchemy"},
    "trial": {"optuna", "sqlalchemy"},
    "store": {"optuna"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer(module: str) -> str:
    best = max((p for p in PREFIXES if module == p or module.startswith(p + ".")), key=len)
    return PREFIXES[best]


def _targets(node: ast.AST, here: str, known: dict[str, Path]) -> list[str]:
    """The project modules an import statement names (``from a import b`` names ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = here.split(".") if known[here].name == "__init__.py" else here.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] not in PACKAGES:
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports(known: dict[str, Path]) -> tuple[dict[str, set[str]], list[str], dict[str, set[str]]]:
    """(module -> project modules it imports at module level, function-local project imports, module ->
    third-party top-level packages it imports)."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    local: list[str] = []
    external: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = [t for t in _targets(node, name, known) if t != name]
            if id(node) in inside and targets:
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                local.append(f"{shown}:{node.lineno}: {', '.join(targets)}")
            graph[name].update(t for t in targets if t in known)
            if isinstance(node, ast.Import):
                external[name].update(a.name.split(".")[0] for a in node.names)
            elif not node.level and node.module:
                external[name].add(node.module.split(".")[0])
    return graph, local, external


def with_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: edges to those packages too, except
    to the importer's own packages (already running when it is imported)."""
    out = {}
    for module, targets in graph.items():
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        edges = set(targets)
        for t in targets:
            parts = t.split(".")
            edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in graph and p not in own)
        out[module] = edges - {module}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a layer above, or of a sibling layer at the same height (config vs store, trial vs report)."""
    bad = []
    for module, targets in sorted(graph.items()):
        for t in sorted(targets):
            a, b = layer(module), layer(t)
            if a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{module} ({a}) imports {t} ({b})")
    return bad


GRAPH, LOCAL, EXTERNAL = imports(modules())


def test_every_module_has_a_layer():
    assert all(layer(m) in LAYERS for m in GRAPH)
    assert {layer(m) for m in GRAPH} == set(LAYERS)


def test_no_import_circles():
    assert cycles(with_packages(GRAPH)) == []


def test_imports_go_down_the_layers():
    assert upward(GRAPH) == []


def test_no_function_local_imports_of_project_modules():
    assert LOCAL == []


def test_layers_keep_their_third_party_promises():
    bad = [
        f"{m} ({layer(m)}) imports {pkg}"
        for m, pkgs in sorted(EXTERNAL.items())
        for pkg in sorted(pkgs & FORBIDDEN.get(layer(m), set()))
    ]
    assert bad == []


def test_the_trial_runner_loads_no_optuna_and_no_database():
    """What the static check promises holds at run time: importing the runner loads neither package."""
    code = "import sys, harness.trial.runner; print([m for m in ('optuna', 'sqlalchemy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_checker_finds_circles_and_upward_imports():
    """The checks can fail: a made-up circle and a made-up upward import are found."""
    graph = {"harness.a": {"harness.b"}, "harness.b": {"harness.a"}, "harness.trial.x": {"harness.cli.y"}}
    graph["harness.cli.y"] = set()
    assert cycles(graph) == [["harness.a", "harness.b"]]
    assert upward(graph) == ["harness.trial.x (trial) imports harness.cli.y (cli)"]
    assert (
        cycles(with_packages({"harness.p": {"harness.p.m"}, "harness.p.m": set(), "harness.q.n": {"harness.p.m"}}))
        == []
    )


def test_the_checker_finds_function_local_imports(tmp_path: Path):
    fake = tmp_path / "fake.py"
    fake.write_text("import torch\n\n\ndef f():\n    from harness.errors import UsageError\n    import numpy\n")
    graph, local, external = imports({"harness.fake": fake, "harness.errors": ROOT / "harness" / "errors.py"})
    assert local == [f"{fake}:5: harness.errors"]  # numpy, a third-party package, is not a project module
    assert graph["harness.fake"] == {"harness.errors"} and {"torch", "numpy"} <= external["harness.fake"]


def listing() -> str:
    """The layers from the top, with each module and the project modules it imports."""
    lines = []
    for name in sorted(LAYERS, key=lambda n: (-LAYERS[n], n)):
        members = sorted(m for m in GRAPH if layer(m) == name)
        lines.append(f"[{LAYERS[name]}] {name} ({len(members)} modules)")
        for m in members:
            deps = sorted(GRAPH[m])
            lines.append(f"    {m}" + (f" -> {', '.join(deps)}" if deps else ""))
    between: dict[tuple[str, str], int] = {}
    for module, targets in GRAPH.items():
        for t in targets:
            if layer(module) != layer(t):
                between[(layer(module), layer(t))] = between.get((layer(module), layer(t)), 0) + 1
    lines.append("imports between layers (count):")
    for name in sorted(LAYERS, key=lambda n: (-LAYERS[n], n)):
        below = [f"{b} {n}" for (a, b), n in sorted(between.items(), key=lambda kv: -LAYERS[kv[0][1]]) if a == name]
        lines.append(f"    {name} -> {', '.join(below) or '(nothing)'}")
    edges = sum(len(v) for v in GRAPH.values())
    lines.append(
        f"{len(GRAPH)} modules, {edges} project imports; circles: {len(cycles(with_packages(GRAPH)))}, "
        f"upward imports: {len(upward(GRAPH))}, function-local project imports: {len(LOCAL)}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(listing())
