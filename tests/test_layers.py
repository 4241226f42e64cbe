"""The package's layering, read from the source: lower layers never import higher ones, no module
imports another's private names, and no two modules import each other, directly or round a loop.

Imports inside functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flagcore"

# lowest first; a module may import its own layer and the layers before it
LAYERS = [
    ("flagcore.errors", "flagcore.vocab"),
    ("flagcore.data",),
    ("flagcore.models",),
    ("flagcore.analysis",),
    ("flagcore.training",),
    ("flagcore.store",),
    ("flagcore.pipeline",),
    ("flagcore.dashboard",),
    ("flagcore.cli",),
]
TOP = ("flagcore", "flagcore.__main__")  # the package's lazy exports and ``python -m flagcore``


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, lazy ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The flagcore modules an import statement depends on (``from pkg import mod`` names a module)."""
    out = [target] if target in known else []
    out += [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    return out


def test_every_module_belongs_to_a_layer():
    stray = [m for m in modules() if m not in TOP and layer_of(m) is None]
    assert not stray, f"modules outside every layer (add them to LAYERS or move them): {stray}"


def test_lower_layers_never_import_higher_ones():
    known = modules()
    bad = []
    for mod, path in known.items():
        if mod in TOP:
            continue
        mine = layer_of(mod)
        for target, names, line in imports(path):
            for dep in resolve(target, names, known):
                theirs = layer_of(dep)
                if theirs is not None and mine is not None and theirs > mine:
                    bad.append(
                        f"{path.relative_to(ROOT)}:{line} {mod} (layer {mine}) imports {dep} (layer {theirs})"
                    )
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    known = modules()
    bad = []
    for mod, path in [
        *known.items(),
        *((module_name(p), p) for p in [ROOT / "app.py", *ROOT.glob("app_pages/*.py")]),
    ]:
        for target, names, line in imports(path):
            if not target.startswith("flagcore") or target == mod:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(ROOT)}:{line} takes {private} from {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    known = modules()
    graph = {m: set() for m in known}
    for mod, path in known.items():
        for target, names, _ in imports(path):
            for dep in resolve(target, names, known):
                # a package's __init__ importing its own submodule (a re-export) is not a cycle of logic
                if dep != mod and not dep.startswith(mod + "."):
                    graph[mod].add(dep)
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    "source, expect",
    [
        ("from flagcore.store.store import Store\n", "flagcore.store.store"),
        ("from flagcore.analysis import backtest\n", "flagcore.analysis.backtest"),
    ],
)
def test_the_walker_sees_both_import_forms(tmp_path, source, expect):
    """The checks above are only as good as the walker: both forms must resolve to the module."""
    f = PACKAGE / "data" / "dataset.py"
    target, names, _ = imports_of_source(source, f)
    assert expect in resolve(target, names, modules())


def imports_of_source(source: str, path: Path) -> tuple[str, list[str], int]:
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ImportFrom)
    return node.module or "", [a.name for a in node.names], node.lineno


def test_the_package_still_exports_what_users_import():
    """``flagcore.load_checkpoint`` and the other top-level names resolve in their new homes."""
    import flagcore

    for name in flagcore.__all__:
        assert getattr(flagcore, name) is not None, name
    assert flagcore.load_checkpoint.__module__ == "flagcore.models.checkpoint"
    assert flagcore.predict.__module__ == "flagcore.models.inference"
