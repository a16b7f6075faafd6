"""The package's structure, drawn from its imports (function-local ones included, since a
cycle hidden inside a function is still a cycle): no module imports itself back through
others, and no layer imports one above it. The layers, bottom up, are what
docs/ARCHITECTURE.md describes."""

from __future__ import annotations

import ast
from pathlib import Path

import xnorbench

ROOT = Path(xnorbench.__file__).parent
LAYERS = {"version": 0, "paths": 0, "errors": 0, "variants": 0, "checks": 0,
          "db": 1, "xnor": 1, "distributed": 1, "progress": 1,
          "data": 2, "measure": 2,
          "training": 3,
          "runs": 4,
          "suites": 5, "report": 5,
          "cli": 6, "__main__": 7, "__init__": 7}
"""Each top-level part of the package, by layer: a part may import its own layer or a
lower one, never a higher one. The package's ``__init__`` is a facade on top (the model
API, imported lazily), so nothing inside the package imports it."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(("xnorbench", *parts))] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path],
             broken: list[str] | None = None) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its file (a relative
    import naming no module of the package goes to ``broken``)."""
    package = name.removesuffix(".__init__") if path.name == "__init__.py" else \
        name.rsplit(".", 1)[0]  # the root's __init__ is named xnorbench.__init__ here
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
                known = base in modules or any(m.startswith(base + ".") for m in modules)
                if not known and broken is not None:
                    broken.append(f"{name}: from {'.' * node.level}{node.module or ''}")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_relative_import_names_a_module_of_the_package():
    """A function-local import of a module that is not there fails only when the function
    runs; here it fails at once."""
    modules, broken = _modules(), []
    for name, path in modules.items():
        _imports(name, path, modules, broken)
    assert broken == []


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_part_of_the_package_has_a_layer():
    graph = _graph()
    assert {m.split(".")[1] for m in graph if "." in m} <= set(LAYERS)
    # the drawing sees function-local and relative imports (else the checks prove nothing)
    assert "xnorbench.runs.runner" in graph["xnorbench.cli.suites"]  # function-local there
    assert "xnorbench.db.faults" in graph["xnorbench.db.store"]
    assert "xnorbench.xnor.networks.binarize" in graph["xnorbench.__init__"]  # the lazy facade


def test_no_layer_imports_a_higher_one():
    upward = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps
                    if _layer(b) > _layer(a))
    assert upward == []


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


XNOR_PARTS = {"kernels": 0, "sign": 1, "layers": 2, "networks": 3, "inference": 4}
"""The science package's parts by job, bottom up: the C++ extension, the sign maths, the
binary layers and their training steps, the networks and ``binarize``, packed inference.
Its ``__init__`` (the names most callers need) is on top of all four."""


def test_the_science_package_keeps_its_parts_in_order():
    graph = _graph()
    inside = {m for m in graph if m.startswith("xnorbench.xnor.")}
    parts = {m: m.split(".")[2] for m in inside}
    assert set(parts.values()) == set(XNOR_PARTS)  # every module sits in a part
    upward = sorted(f"{a} -> {b}" for a in inside for b in graph[a]
                    if b == "xnorbench.xnor" or (b in inside and
                                                 XNOR_PARTS[parts[b]] > XNOR_PARTS[parts[a]]))
    assert upward == []


MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 400


def test_no_function_over_80_lines_and_no_file_over_400():
    """Small modules with one job: a function a reader can hold at once, a file a reader
    can scan (docstrings and decorators count)."""
    long_functions, long_files = [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(str(path.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert (long_functions, long_files) == ([], [])
