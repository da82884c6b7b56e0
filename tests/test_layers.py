"""The modules' imports point one way: no cycle among softdiff's and softdiff_kernels' modules, deferred
(in-function) imports included, and every module imports on its own in a fresh interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"softdiff": ROOT / "python" / "softdiff", "softdiff_kernels": ROOT / "python" / "softdiff_kernels"}
ENTRY_ONLY = {"softdiff.sample", "softdiff_kernels.__main__"}  # run with python -m, never imported


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (``from . import x`` resolved to the module x)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            stem = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (stem, node.module or "") if part)
            submodules = {f"{module}.{alias.name}" for alias in node.names} & known
            # ``from . import x`` of a submodule x imports x alone (its package is imported first in any case)
            targets |= submodules if len(submodules) == len(node.names) else {module, *submodules}
    return {t for t in targets if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_module_imports_in_dependency_order_in_a_fresh_interpreter():
    """Leaves first: each module imports when only what it depends on has been imported before it."""
    graph, order = import_graph(), []
    while len(order) < len(graph):
        ready = sorted(n for n in graph if n not in order and graph[n] <= set(order))
        assert ready, "no module is ready: the graph has a cycle"
        order += ready
    names = [name for name in order if name not in ENTRY_ONLY]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
