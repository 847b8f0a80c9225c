"""The house rules of the code (docs/architecture.md): every import points down, and no module
imports itself back through others.

Imports are read from the source with :mod:`ast`, those inside functions and under
``TYPE_CHECKING`` included: a deferred import still ties the two modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "serving")

#: The library's layers, lowest first: a module may import its own unit and any lower layer.
#: A unit is a top-level module (``pipelines.bundle``) or a subpackage (``pipelines.dicom``).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pipelines.errors",),
    ("pipelines.config", "pipelines.cpu"),
    ("pipelines.volume", "pipelines.networks", "pipelines.result"),
    ("pipelines.transforms", "pipelines.findings"),
    ("pipelines.candidates", "pipelines.patches"),
    ("pipelines.dicom",),
    ("pipelines.datasets",),
    ("pipelines.synth",),
    ("pipelines.bundle",),
    ("pipelines.calibration", "pipelines.engine", "pipelines.reports"),
    ("pipelines.model",),
    ("pipelines.inference",),
    ("pipelines.evaluation",),
    ("pipelines.training",),
    ("pipelines.cli", "pipelines.*.commands"),  # one unit: the CLI registers every command
    ("serving",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imports(path: Path, module: str, known: set[str]) -> Iterator[str]:
    """The project modules ``module`` imports (``from a import b`` names ``a.b`` when ``b`` is a
    module, else ``a``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                yield child if child in known else node.module


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {target for target in _imports(path, name, known) if target != name}
        for name, path in modules.items()
    }


def _unit(module: str) -> tuple[int, str]:
    """The layer index and unit of ``module``."""
    if module == "pipelines.cli" or (
        module.startswith("pipelines.") and module.endswith(".commands")
    ):
        return len(LAYERS) - 2, "pipelines.cli"
    best: tuple[int, str] | None = None
    for index, layer in enumerate(LAYERS):
        for unit in layer:
            within = module == unit or module.startswith(unit + ".")
            if within and (best is None or len(unit) > len(best[1])):
                best = (index, unit)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer of tests/test_architecture.py")
    return best


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        if module != "pipelines":
            _unit(module)


def test_every_import_points_down() -> None:
    upward = []
    for module, targets in _graph().items():
        if module == "pipelines":
            continue
        level, unit = _unit(module)
        for target in targets:
            if target == "pipelines":
                upward.append(f"{module} -> {target}")
                continue
            target_level, target_unit = _unit(target)
            if target_unit != unit and target_level >= level:
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_pipelines_never_imports_serving() -> None:
    leaks = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if module.startswith("pipelines")
        for target in targets
        if target.startswith("serving")
    ]
    assert leaks == []


def _cycle_through(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None when it has none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    graph = {
        module: {target for target in targets if target.startswith(package)}
        for module, targets in _graph().items()
        if module.startswith(package)
    }
    assert _cycle_through(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle_through({"a": {"b"}, "b": set()}) is None


def test_every_package_says_what_lives_there() -> None:
    undocumented = [
        str(init.relative_to(ROOT))
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
        if not ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    ]
    assert undocumented == []
