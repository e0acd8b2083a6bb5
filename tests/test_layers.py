"""The layers of the source tree, read from the source: many runs (metaaugment.comparison)
and one run (metaaugment.run) at the top, the bottom layers (metaaugment.infra,
metaaugment.parallel, metaaugment.steptools) below everything, no import cycle between
packages, ranks known only where they must be, and one module that starts processes."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = {"metaaugment": ROOT / "metaaugment", "metaaugment.tasks": ROOT / "tasks", "metaaugment.cli": ROOT / "cli"}
FACADE = "metaaugment"  # the package root re-exports the public API of every layer


def modules() -> dict[str, ast.Module]:
    """Every module of the source tree by its installed name."""
    found = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [part for part in path.relative_to(folder).with_suffix("").parts if part != "__init__"]
            found[".".join([prefix, *parts])] = ast.parse(path.read_text())
    return found


def imported(tree: ast.Module) -> set[str]:
    """The metaaugment modules a module imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "metaaugment"}


def unit(module: str) -> str:
    """The unit of layering: a sub-package (run, learners, ...) or a module of the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_nothing_below_the_run_package_imports_it():
    """Only the run package itself, many runs and the CLI above it and the package root's re-exports."""
    offenders = sorted(name for name, tree in modules().items()
                       if unit(name) not in ("run", "comparison", "cli") and name != FACADE
                       and any(unit(target) == "run" for target in imported(tree) if "." in target))
    assert offenders == []


def test_only_the_cli_uses_many_runs_and_the_root_shows_the_layers():
    """metaaugment.comparison is imported by the CLI only; the package root holds at most 10
    modules (the core types, the registry, models, export), the rest in their layers."""
    offenders = sorted(name for name, tree in modules().items() if unit(name) not in ("comparison", "cli")
                       and any(unit(target) == "comparison" for target in imported(tree) if "." in target))
    assert offenders == []
    root_modules = [path.stem for path in SOURCES["metaaugment"].glob("*.py") if path.stem != "__init__"]
    assert len(root_modules) <= 10, root_modules


def test_the_bottom_layers_import_nothing_above_them():
    bottom = {"infra", "parallel", "steptools"}
    for name, tree in modules().items():
        if name.startswith("metaaugment.") and unit(name) in bottom:
            above = {unit(t) for t in imported(tree) if "." in t and unit(t) not in bottom} - {"batch", "spec"}
            assert not above, (name, above)


def test_one_module_starts_processes():
    starters = sorted(name for name, tree in modules().items()
                      if any(word in ast.unparse(tree) for word in ("subprocess.Popen", "torch.distributed.run")))
    assert starters == ["metaaugment.parallel.launcher"]


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for name, tree in modules().items():
        if name == FACADE:
            continue
        for target in imported(tree):
            if "." in target and unit(target) != unit(name):
                edges.setdefault(unit(name), set()).add(unit(target))
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for following in sorted(edges.get(node, ())):
            assert state.get(following) != 1, f"import cycle: {' -> '.join(path + [node, following])}"
            if following not in state:
                visit(following, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_ranks_are_known_by_the_bottom_layer_the_run_loop_and_the_launcher_only():
    """Policies and learners see ctx.comm; torch.distributed, torchrun's environment and the
    process group stay in metaaugment.parallel, the run package and the process entry points
    (the CLI, a comparison's jobs)."""
    allowed = {"parallel", "run", "comparison", "cli"}
    for name, tree in modules().items():
        if unit(name) in allowed:
            continue
        source = ast.unparse(tree)
        assert "torch.distributed" not in source, name
        assert not any(f'"{var}"' in source for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK")), name
        assert "metaaugment.parallel.process_group" not in imported(tree), name
