"""hpdm_core (and hpdm_cli) stay acyclic: no module reaches itself through its imports, lazy ones included.

The graph is read from the source with `ast`, so an import inside a function (the usual way to dodge
a cycle at run time) counts as much as one at the top of a file. Edges:
  import a.b.c           -> a.b.c
  from a.b import c      -> a.b.c when that is a module, else a.b
  from .x import y       resolved against the importing module's package
A parent package is not an edge of its submodule's import: `from hpdm_core.metrics.fvd import x` runs
hpdm_core/metrics/__init__.py first, but counting that would make every package whose __init__
re-exports its submodules a cycle. `from hpdm_core.metrics import evaluate` does name the package,
so a submodule that imports from its own package's __init__ is caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root/package."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _base_package(module: str, path: Path, level: int) -> str:
    """The package a relative import of `level` dots starts from."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package


def import_edges(module: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import statement anywhere in the file."""
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            edges += [(alias.name, node.lineno) for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = _base_package(module, path, node.level)
                source = f"{base}.{source}" if source and base else (source or base)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in modules:
                    edges.append((target, node.lineno))
                elif source in modules:
                    edges.append((source, node.lineno))
    return [(target, line) for target, line in edges if target != module]


def module_graph(root: Path, package: str) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """module -> {imported module: line of the first such import}, and module -> file."""
    files = module_files(root, package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        graph[module] = {}
        for target, line in import_edges(module, path, set(files)):
            graph[module].setdefault(target, line)
    return graph, files


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as [m0, m1, ..., m0] (depth-first, modules in sorted order), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            following = next(stack[-1], None)
            if following is None:  # every import of path[-1] explored: no cycle through it
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif following in on_path:
                return path[path.index(following):] + [following]
            elif following not in done:
                path.append(following)
                on_path.add(following)
                stack.append(iter(sorted(graph.get(following, {}))))
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]], files: dict[str, Path], root: Path) -> str:
    steps = [f"{a} -> {b} ({files[a].relative_to(root)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return "import cycle: " + " -> ".join(cycle) + "\n  " + "\n  ".join(steps)


@pytest.mark.parametrize("package, a_module", [("hpdm_core", "hpdm_core.metrics.fvd"), ("hpdm_cli", "hpdm_cli.app")])
def test_no_import_cycle(package, a_module):
    graph, files = module_graph(ROOT, package)
    assert a_module in graph and len(graph) > 5  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph, files, ROOT)


def _package(root: Path, sources: dict[str, str]) -> None:
    for name, text in sources.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("lazy_import", [
    "from pkg.sub.a import f",      # the module itself
    "from pkg.sub import a",        # a module named by `from X import Y`
    "from . import a",              # relative, the package's module
    "from .a import f",             # relative, a name of the module
    "import pkg.sub.a",
])
def test_a_lazy_import_closes_a_cycle(tmp_path, lazy_import):
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/a.py": "from pkg.sub.b import g\n\ndef f():\n    return g\n",
        "pkg/sub/b.py": f"import os\n\ndef g():\n    {lazy_import}\n    return os\n",
    })
    graph, files = module_graph(tmp_path, "pkg")
    cycle = find_cycle(graph)
    assert cycle == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]
    assert "pkg/sub/b.py:4" in describe(cycle, graph, files, tmp_path)


def test_a_dag_with_shared_imports_is_no_cycle(tmp_path):
    # a diamond (two paths to d) and a package __init__ that re-exports its submodules
    _package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import x\nfrom pkg.b import y\n",
        "pkg/a.py": "from pkg.c import z\nfrom pkg.d import w\nx = 1\n",
        "pkg/b.py": "from pkg import d\ny = 2\n",
        "pkg/c.py": "import pkg.d\nz = 3\n",
        "pkg/d.py": "import json\nw = 4\n",
    })
    graph, _ = module_graph(tmp_path, "pkg")
    assert graph["pkg"] == {"pkg.a": 1, "pkg.b": 2} and graph["pkg.b"] == {"pkg.d": 1}
    assert find_cycle(graph) is None
    # importing a name from the package's own __init__ goes through it: a cycle
    (tmp_path / "pkg/d.py").write_text("def w():\n    from pkg import x\n    return x\n")
    assert find_cycle(module_graph(tmp_path, "pkg")[0]) == ["pkg", "pkg.a", "pkg.c", "pkg.d", "pkg"]
