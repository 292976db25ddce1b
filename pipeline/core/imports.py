"""The project files a module loads, read from the source: for dvc.yaml deps and model code.

Every ``import``/``from ... import`` of a project module counts, function-level ones included,
and so do the packages' ``__init__`` files on the way. Used by the dvc.yaml deps test and by
the register stage, which packs a served model's code from the closure of its entry module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("pipeline", "a2model")


def module_file(module: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The project file of a dotted module name (``pipeline.data.video`` → pipeline/data/video.py)."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = PROJECT_ROOT) -> set[str]:
    """Dotted names of the project modules that ``path`` imports, anywhere in the file."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parent, base]))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # submodules imported by name
    return {name for name in found if name.split(".")[0] in PROJECT_PACKAGES and module_file(name, root)}


def import_closure(module: str, root: Path = PROJECT_ROOT) -> set[Path]:
    """Every project file loaded by ``python -m <module>``: its imports, their imports, packages."""
    pending, files = [module], set()
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            path = module_file(".".join(parts[:depth]), root)
            if path is not None and path not in files:
                files.add(path)
                pending += sorted(imported_modules(path, root))
    return files
