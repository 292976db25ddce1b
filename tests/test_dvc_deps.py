"""dvc.yaml's deps cover the code: every project file a stage's command imports is a dep.

The import closure is read from the source (every ``import``/``from ... import`` of a project
module, function-level ones included, and the packages' ``__init__`` files on the way), so a
new import without a new dep fails here instead of leaving the stage stale under ``dvc repro``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.imports import import_closure, imported_modules

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


def stage_module(stage: dict) -> str:
    match = re.match(r"python -m ([\w.]+)", stage["cmd"])
    assert match, f"stage command {stage['cmd']!r} is not `python -m <module>`"
    return match.group(1)


# Modules a stage reads without importing them: register copies the served model's code.
READ_MODULES = {"register": ("pipeline.serving.entry",)}


def code_deps(name: str) -> set[Path]:
    """The project files stage ``name`` runs or carries: its command's import closure and those of
    the modules it reads. Only files, so nothing untracked (bytecode, scratch files) is hashed."""
    modules = (stage_module(STAGES[name]), *READ_MODULES.get(name, ()))
    return set().union(*(import_closure(module) for module in modules))


def test_import_closure_follows_function_level_and_package_imports() -> None:
    closure = {p.relative_to(REPO).as_posix() for p in import_closure("pipeline.validate")}
    assert {
        "pipeline/__init__.py",
        "pipeline/validate.py",
        "pipeline/core/__init__.py",
        "pipeline/core/config.py",
    } <= closure
    assert "pipeline/data/shards.py" in closure  # imported inside a function only
    assert "pipeline/train.py" not in closure


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_the_project_files_its_command_imports(name: str) -> None:
    stage = STAGES[name]
    deps = [str(dep) for dep in stage.get("deps", [])]
    closure = code_deps(name)
    missing = sorted(p.relative_to(REPO).as_posix() for p in closure if not covered(p, deps))
    assert not missing, f"stage {name!r} imports these project files but does not list them in deps: {missing}"
    listed = [dep for dep in deps if dep.startswith(("pipeline", "a2model"))]
    folders = [dep for dep in listed if not dep.endswith(".py")]
    assert not folders, f"stage {name!r} has code folders as deps (their untracked files would be hashed): {folders}"
    unused = sorted(d for d in listed if (REPO / d) not in closure)
    assert not unused, f"stage {name!r} lists code it never imports or carries (remove from deps): {unused}"


STAGE_SHARED = {"settings"}  # config → typed settings: shared by the entry points, never imported by the library
ENTRY_POINTS = {p.stem for p in (REPO / "pipeline").glob("*.py")} - {"__init__"} - STAGE_SHARED  # stages, ablation


def top_level_imports(path: Path) -> set[str]:
    """The stage or driver modules (``pipeline.<name>``) that ``path`` imports."""
    return {
        name
        for name in imported_modules(path)
        if re.fullmatch(r"pipeline\.(\w+)", name) and name.split(".")[1] in ENTRY_POINTS
    }


@pytest.mark.parametrize(
    "path", sorted((REPO / "pipeline").rglob("*.py")), ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_no_stage_imports_another_and_the_library_imports_no_stage(path: Path) -> None:
    imported = top_level_imports(path)
    assert not imported, (
        f"{path.relative_to(REPO)} imports the entry points {sorted(imported)}; move the shared code into the library"
    )


@pytest.mark.parametrize(
    "path", sorted((REPO / "pipeline").glob("*/**/*.py")), ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_the_library_takes_typed_settings_not_the_config(path: Path) -> None:
    """Below the stages nothing imports the stage-side settings module, and only ``core`` (the
    config's own loading and schema) touches omegaconf: the library takes plain typed values."""
    imported = imported_modules(path)
    assert "pipeline.settings" not in imported, f"{path.relative_to(REPO)} imports pipeline.settings"
    if path.parent.name != "core":
        assert "omegaconf" not in path.read_text(), f"{path.relative_to(REPO)} reads the config; pass typed values"


def test_the_model_library_imports_nothing_of_the_pipeline() -> None:
    imported = {name for path in (REPO / "a2model").glob("*.py") for name in imported_modules(path)}
    assert not {name for name in imported if name.startswith("pipeline")}


# The library's packages, each importing only from packages of a lower layer (docs/architecture.md):
# core → data → runtime, quality → tracking → training, evaluation, serving → registry → entry points.
PACKAGE_LAYERS = {
    "core": 0,
    "data": 1,
    "runtime": 2,  # device, model input, nets by name, the checkpoint: shared by training and evaluation
    "quality": 2,
    "tracking": 3,  # the MLflow store and the training run's record
    "training": 4,
    "evaluation": 4,
    "serving": 4,
    "registry": 5,
    "cli": 6,  # the a2net command: an entry point (layer 6, with the stages), imported by no package below
}
PACKAGES = sorted(p.name for p in (REPO / "pipeline").iterdir() if (p / "__init__.py").is_file())


def package_graph() -> dict[str, set[str]]:
    """``{package: the other pipeline packages its modules import}``."""
    graph: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for name in PACKAGES:
        for path in (REPO / "pipeline" / name).rglob("*.py"):
            targets = {
                m.split(".")[1] for m in imported_modules(path) if m.startswith("pipeline.") and m.count(".") > 1
            }
            graph[name] |= targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of ``graph`` as ``[a, b, ..., a]`` (depth-first search), or [] when it is a DAG."""
    state: dict[str, str] = {}  # "open" while on the search path, "done" after

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [node, target] if target in path else [node, target]
            if target not in state and (cycle := visit(target, [*path, node])):
                return cycle
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return []


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
        ({"x": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_find_cycle_finds_a_cycle_between_packages_and_only_one(graph: dict, cycle: list[str]) -> None:
    assert find_cycle(graph) == cycle


def test_the_packages_import_each_other_without_a_cycle() -> None:
    cycle = find_cycle(package_graph())
    assert not cycle, f"the pipeline packages import each other in a cycle: {' → '.join(cycle)}"


def test_each_package_imports_only_packages_of_a_lower_layer() -> None:
    assert set(PACKAGES) == set(PACKAGE_LAYERS), "place every pipeline package in PACKAGE_LAYERS"
    upward = sorted(
        f"{name} → {target}"
        for name, targets in package_graph().items()
        for target in targets
        if PACKAGE_LAYERS[target] >= PACKAGE_LAYERS[name]
    )
    assert not upward, f"these package imports go sideways or up the layers (docs/architecture.md): {upward}"


def write_code_deps(dvc_yaml: Path) -> None:
    """Rewrite each stage's code deps in ``dvc_yaml`` to its import closure (other lines kept)."""
    lines, stage, out = dvc_yaml.read_text().splitlines(), None, []
    for line in lines:
        header = re.match(r"  (\w+):", line)
        if header:
            stage = header.group(1)
        dep = re.match(r"      - ((?:pipeline|a2model)/\S+\.py)$", line)
        if dep is None:
            out.append(line)
            continue
        if out[-1].strip() == "deps:" or not re.match(r"      - (pipeline|a2model)/", out[-1]):
            closure = code_deps(stage)
            out += [f"      - {p}" for p in sorted(q.relative_to(REPO).as_posix() for q in closure)]
    dvc_yaml.write_text("\n".join(out) + "\n")


if __name__ == "__main__":  # python tests/test_dvc_deps.py: set dvc.yaml's code deps after an import change
    write_code_deps(REPO / "dvc.yaml")
