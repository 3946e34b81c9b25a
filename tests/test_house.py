"""The house's layers, read from the source: the package's import graph (every import, at module
level or inside a function, absolute or relative) has ``clipscale.config`` at the bottom and no
loop. A loop hidden in a function-level import still ties its modules together: whoever changes
one reads them all."""

from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "src" / "clipscale"

# the domain modules that check their own settings, the module composing them, and the bottom:
# none of them may be part of an import loop
LAYERS = ("clipscale.config", "clipscale.checks", "clipscale.inputs", "clipscale.grid", "clipscale.world",
          "clipscale.released", "clipscale.table", "clipscale.reference", "clipscale.models",
          "clipscale.finetune.plan", "clipscale.dedup", "clipscale.cli")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file: ``import a.b``, ``from a
    import b`` (b a module, else a's ``__init__``), ``from a.b import c``, relative imports, and
    ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name."""
    mods = modules(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in mods else module)
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                       or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
                targets.add(node.args[0].value)
        deps = {resolve(t) for t in targets if t == top or t.startswith(top + ".")}
        graph[name] = {d for d in deps if d and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary import loop, each once, as [a, b, ..., a] starting at its smallest module."""
    found = []

    def walk(start: str, node: str, path: list[str], on_path: set[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.append(path + [start])
            elif nxt > start and nxt not in on_path:
                walk(start, nxt, path + [nxt], on_path | {nxt})

    for start in sorted(graph):
        walk(start, start, [start], {start})
    return found


def shown(loops: list[list[str]]) -> str:
    return "\n".join(" -> ".join(loop) for loop in loops)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The reader of the graph on a made-up package: each way of importing is an edge, imports
    of other packages are none, and a loop is found and named."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "bottom.py": "import json\nimport numpy as np\n",
        "a.py": "from pkg import bottom\n",
        "b.py": "def f():\n    from pkg.sub.c import thing\n",
        "d.py": "import pkg.a\nfrom pkg import sub\n",
        "e.py": "import importlib\nX = importlib.import_module('pkg.a')\n",
        "sub/__init__.py": "from .c import thing\n",
        "sub/c.py": "from ..b import f\nfrom .. import a\nthing = 1\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.bottom": set(), "pkg.a": {"pkg.bottom"}, "pkg.b": {"pkg.sub.c"},
                     "pkg.d": {"pkg.a", "pkg.sub"}, "pkg.e": {"pkg.a"}, "pkg.sub": {"pkg.sub.c"},
                     "pkg.sub.c": {"pkg.b", "pkg.a"}}
    assert cycles(graph) == [["pkg.b", "pkg.sub.c", "pkg.b"]]
    assert cycles({**graph, "pkg.sub.c": {"pkg.a"}}) == []


def test_config_imports_no_clipscale_module():
    """config.py is the bottom layer: loading, the schema, defaults, counts. A domain's checks of
    its settings live in the domain (clipscale.checks composes them)."""
    graph = import_graph(PACKAGE)
    assert graph["clipscale.config"] == set(), sorted(graph["clipscale.config"])
    importers = [m for m, deps in graph.items() if "clipscale.config" in deps]
    assert len(importers) > 10  # the graph is read (config is imported across the package)


def test_no_import_loop_through_the_layers():
    """No loop passes through config, the domains that check their own settings, the module that
    composes their checks or the command line."""
    loops = cycles(import_graph(PACKAGE))
    through = [loop for loop in loops if any(m == layer or m.startswith(layer + ".") for m in loop
                                             for layer in LAYERS)]
    assert not through, "import loops:\n" + shown(through)


def test_no_import_loop():
    loops = cycles(import_graph(PACKAGE))
    assert not loops, "import loops:\n" + shown(loops)
