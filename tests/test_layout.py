"""The package's layers, checked by reading every module's imports (nothing is imported or run).

    method/, data/   the paper in plain torch/numpy, and the records it reads: they import only each
                     other and the foundations (bounds, storage), never Ray
    config           every setting, composed from the method's dataclasses
    stages/          the only Ray code of a run: imports method/, data/, config, never ops/ or the driver
    ops/             clusters, object stores, run directories, leases, drills: may start Ray
    driver, experiments, report, cli   the applications on top

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a circle through a lazy
import is still a circle. See docs/method.md, "Where things live".
"""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dfa_ray"
FOUNDATIONS = {"dfa_ray", "dfa_ray.bounds", "dfa_ray.storage"}
# The records' Parquet metadata keys.
NOT_MODULES = {"dfa_ray.record_schema", "dfa_ray.machine_labels", "dfa_ray.skeleton"}
APPLICATIONS = {"dfa_ray.driver", "dfa_ray.experiments", "dfa_ray.report", "dfa_ray.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in ``path``; ``from a import b`` is ``a.b``
    where that is a module of the package, else ``a``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in MODULES else node.module, id(node) in top))
    return found


GRAPH = {
    name: sorted({m for m, _ in imports(path) if m in MODULES and m != name})
    for name, path in MODULES.items()
}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else name


def test_method_and_data_import_only_each_other_and_the_foundations():
    wrong = [
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if layer(name) in ("method", "data")
        for dep in deps
        if dep not in FOUNDATIONS and layer(dep) not in ("method", "data")
    ]
    assert not wrong, "\n".join(wrong)


def test_stages_import_neither_operations_nor_applications():
    wrong = [
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if layer(name) == "stages"
        for dep in deps
        if layer(dep) == "ops" or dep in APPLICATIONS
    ]
    assert not wrong, "\n".join(wrong)


def test_only_stages_and_ops_import_ray():
    wrong = []
    for name, path in MODULES.items():
        for module, at_top in imports(path):
            if module != "ray" and not module.startswith("ray."):
                continue
            if layer(name) not in ("stages", "ops") or (layer(name) == "ops" and at_top):
                wrong.append(f"{name} imports {module}" + (" at module level" if at_top else ""))
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_module_names_are_unique_across_layers():
    stems: dict[str, list[str]] = {}
    for name in MODULES:
        if not MODULES[name].name == "__init__.py":
            stems.setdefault(name.rsplit(".", 1)[1], []).append(name)
    assert not {s: n for s, n in stems.items() if len(n) > 1}


def tracked(*suffixes: str) -> list[Path]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    return [ROOT / f for f in files if f.endswith(suffixes) and (ROOT / f).exists()]


def test_every_import_of_the_package_names_a_module_that_exists():
    wrong = []
    for path in tracked(".py"):
        for module, _ in imports(path):
            if module.startswith("dfa_ray") and module not in MODULES:
                wrong.append(f"{path.relative_to(ROOT)}: {module}")
    assert not wrong, "\n".join(wrong)


def test_module_paths_named_in_text_exist():
    """Paths (``dfa_ray/<folder>/<module>.py``) and dotted names (``python -m``, mock targets) in code,
    docs and scripts."""
    wrong = []
    for path in tracked(".py", ".md", ".sh", ".yaml", ".toml"):
        text = path.read_text()
        for match in re.finditer(r"\bdfa_ray(?:/\w+)+\.py\b", text):
            if not (ROOT / match.group()).exists():
                wrong.append(f"{path.relative_to(ROOT)}: {match.group()}")
        for match in re.finditer(r"\bdfa_ray(?:\.\w+)+", text):
            # A module, or a name inside one (dfa_ray.method.views.KINDS); the packages' __init__ files
            # are empty, so a name below a package is a module that must exist.
            if match.group() in NOT_MODULES:
                continue
            parts = match.group().split(".")
            known = next(
                ".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in MODULES
            )
            if known != match.group() and MODULES[known].name == "__init__.py":
                wrong.append(f"{path.relative_to(ROOT)}: {match.group()}")
    assert not wrong, "\n".join(wrong)
