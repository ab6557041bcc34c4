"""The packages stand in layers, one way: every import of every module (at the top and inside
functions) is read with `ast` and checked against the table of what each package may import,
and the module graph must hold no circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages of ours it may import (besides itself).
ALLOWED = {
    "edge_core": set(),
    "devices": {"edge_core"},
    "exporter": {"edge_core", "devices"},
    "trainer": {"edge_core", "devices", "exporter"},
    "edge_server": {"edge_core", "devices"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ALLOWED for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module of ours) for every import in the file; `from pkg import mod` counts as pkg.mod."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if sub in known else base))
    return list(dict.fromkeys((line, m) for line, m in found if m.split(".")[0] in ALLOWED))


def graph() -> tuple[dict[str, set[str]], list[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    wrong = []
    for name, path in known.items():
        here = name.split(".")[0]
        for line, target in imports_of(name, path, known):
            there = target.split(".")[0]
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({here} may import only "
                             f"{sorted(ALLOWED[here]) or 'nothing of ours'})")
            # The nearest module of ours that `target` names (a name imported from a module is that module).
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
    return edges, wrong


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_import_runs_down_the_layers():
    _, wrong = graph()
    assert not wrong, "imports that run up or across the layers:\n" + "\n".join(wrong)


def test_no_import_circles():
    edges, _ = graph()
    found = circles(edges)
    detail = ["circle: " + " -> ".join(c) + "\n  " + "\n  ".join(f"{m} imports {sorted(edges[m] & set(c))}" for m in c)
              for c in found]
    assert not found, "\n".join(detail)


def test_the_checker_sees_in_function_and_relative_imports(tmp_path):
    known = {"edge_core.a": tmp_path / "a.py", "edge_core.b": tmp_path / "b.py"}
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n    import edge_server.app\n")
    assert imports_of("edge_core.a", known["edge_core.a"], known) == [(2, "edge_core.b"), (3, "edge_server.app")]
    assert circles({"x": {"y"}, "y": {"x"}, "z": set()}) == [["x", "y"]]
