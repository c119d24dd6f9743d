"""The layout keeps its shape: no import cycles, and the core never reaches out to the live path,
evaluation, tooling, the CLI or the converters (only two documented lazy entry points do)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import click

from _assets import ROOT
from edgeseg.cli import COMMANDS, main

#: source folder -> the package it installs as (pyproject / setup.py)
ROOTS = {"edgeseg": "edgeseg", "runtimes": "edgeseg.runtimes", "converters": "edgeseg.converters",
         "boards": "edgeseg.boards"}
#: packages of edgeseg/ that are not the core
OUTER = ("edgeseg.live", "edgeseg.eval", "edgeseg.tools", "edgeseg.cli", "edgeseg.converters",
         "edgeseg.runtimes", "edgeseg.boards")
#: the only imports from the core to the outside, each inside the method that needs it
CORE_LAZY_ALLOWED = {
    ("edgeseg.runtime", "edgeseg.live.pipeline"),   # Runtime.stream
    ("edgeseg.runtime", "edgeseg.eval.validate"),   # Runtime.val
}


def _modules() -> Dict[str, Tuple[Path, bool]]:
    mods = {}
    for folder, pkg in ROOTS.items():
        for p in (ROOT / folder).rglob("*.py"):
            parts = list(p.relative_to(ROOT / folder).with_suffix("").parts)
            if folder == "edgeseg" and parts[0] in ROOTS:
                continue
            is_pkg = parts[-1] == "__init__"
            name = ".".join([pkg] + (parts[:-1] if is_pkg else parts))
            mods[name] = (p, is_pkg)
    return mods


MODULES = _modules()


def _targets(mod: str, is_pkg: bool, node: ast.AST) -> List[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [target] + [f"{target}.{a.name}" for a in node.names]
    else:
        names = [a.name for a in node.names]
    return [n for n in names if n in MODULES]


def _imports(mod: str) -> Tuple[Set[str], Set[str]]:
    """(module-level imports, imports inside functions) of ``mod``; TYPE_CHECKING blocks aside."""
    path, is_pkg = MODULES[mod]
    top: Set[str] = set()
    lazy: Set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else top).update(_targets(mod, is_pkg, child))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    top.discard(mod)
    lazy.discard(mod)
    return top, lazy - top


GRAPH = {m: _imports(m) for m in MODULES}


def _is_core(mod: str) -> bool:
    return mod.startswith("edgeseg") and not any(mod == o or mod.startswith(o + ".") for o in OUTER)


def test_the_scan_sees_the_whole_tree():
    # guards the test itself: a broken scan would find no cycles and no violations
    assert {"edgeseg.runtime", "edgeseg.live.pipeline", "edgeseg.eval.validate", "edgeseg.cli.run",
            "edgeseg.runtimes.onnxruntime", "edgeseg.converters.checkpoint"} <= set(MODULES)
    assert "edgeseg.backend" in GRAPH["edgeseg.runtime"][0]
    assert ("edgeseg.runtime", "edgeseg.live.pipeline") in {
        (m, t) for m, (_, lazy) in GRAPH.items() for t in lazy}


def test_no_import_cycles_at_module_level():
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v][0]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_core_imports_nothing_from_outer_packages():
    bad_top, bad_lazy = [], []
    for mod, (top, lazy) in GRAPH.items():
        if not _is_core(mod):
            continue
        bad_top += [(mod, t) for t in top if not _is_core(t)]
        bad_lazy += [(mod, t) for t in lazy if not _is_core(t) and (mod, t) not in CORE_LAZY_ALLOWED]
    assert not bad_top, f"core modules importing outer packages at module level: {sorted(bad_top)}"
    assert not bad_lazy, f"core modules importing outer packages (even lazily): {sorted(bad_lazy)}"


def test_live_and_eval_do_not_import_the_cli():
    bad = [(m, t) for m, (top, lazy) in GRAPH.items()
           if m.startswith(("edgeseg.live", "edgeseg.eval", "edgeseg.converters", "edgeseg.runtimes"))
           for t in top | lazy if t.startswith("edgeseg.cli")]
    assert not bad, bad


def test_a_command_whose_module_is_missing_fails_loudly(monkeypatch):
    monkeypatch.setitem(COMMANDS, "ghost", "edgeseg.cli.no_such_module:ghost")
    ctx = click.Context(main, info_name="edgeseg")
    assert "ghost" in main.list_commands(ctx)   # listed, never silently dropped
    try:
        main.get_command(ctx, "ghost")
    except ModuleNotFoundError as exc:
        assert "no_such_module" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a missing command module was silently ignored")
