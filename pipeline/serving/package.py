"""What a registered model carries to be served alone, and the check that it carries nothing else.

The register stage logs the model as an MLflow pyfunc from code: the entry file
(``pipeline/serving/entry.py``), the project modules it imports (its import closure, without
the packages' docstring-only ``__init__`` files: ``code/`` holds namespace packages, and the
MLflow store never an ``__init__.py``), the pt2 program, the class list, the preprocessing and
pinned pip requirements. Anything that loads a model (``a2net predict``, ``a2net explain``)
first checks that its code is byte for byte this checkout's own (``foreign_code``): a model is
data, and code that the register stage did not write is never run nor trusted.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pipeline.core.imports import PROJECT_ROOT, import_closure, module_file

ENTRY_MODULE = "pipeline.serving.entry"
CODE_DIR = "code"  # the pyfunc flavor's code folder, put on sys.path by MLflow at load
PYFUNC_LOADER = "mlflow.pyfunc.loaders.code_model"  # models-from-code; no pickled python_model
# Distributions that the carried code imports (tests check the list against its imports).
SERVING_DISTRIBUTIONS = (
    "torch",
    "torchvision",
    "numpy",
    "simplejpeg",
    "imageio-ffmpeg",
    "ffmpeg-python",
    "tqdm",
    "pandas",
    "future",  # ffmpeg-python imports its `past` without requiring it
)


def entry_file() -> Path:
    """The served model's entry file (the models-from-code ``python_model``)."""
    path = module_file(ENTRY_MODULE)
    assert path is not None
    return path


def carried_files() -> dict[str, Path]:
    """The project modules a served model carries: ``code/``-relative posix path → source file."""
    files = import_closure(ENTRY_MODULE) - {entry_file()}
    return {p.relative_to(PROJECT_ROOT).as_posix(): p for p in sorted(files) if p.name != "__init__.py"}


def stage_code(dest: Path) -> Path:
    """Copy the carried modules under ``dest`` (``dest/pipeline/...``); the folder to log as code path."""
    for rel, source in carried_files().items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest / rel)
    return dest / "pipeline"


def pip_requirements() -> list[str]:
    """The served model's pinned requirements: this environment's versions (MLflow adds itself)."""
    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_DISTRIBUTIONS]


def _differs(path: Path, expected: Path) -> bool:
    return not path.is_file() or path.read_bytes() != expected.read_bytes()


def foreign_code(mlmodel: Mapping[str, Any], folder: Path) -> str | None:
    """What code of the model in ``folder`` is not this checkout's own register-stage code, or None."""
    flavors = mlmodel.get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    for name, conf in flavors.items():
        if name != "python_function" and isinstance(conf, Mapping) and conf.get("code"):
            return f"flavors.{name}.code = {conf['code']!r}"
    if pyfunc.get("loader_module") != PYFUNC_LOADER or "python_model" in pyfunc:
        return f"a python_function flavor loaded by {pyfunc.get('loader_module')!r}, not the project's pyfunc"
    if pyfunc.get("code") not in (None, CODE_DIR):
        return f"flavors.python_function.code = {pyfunc['code']!r}"
    entry = folder / Path(str(pyfunc.get("model_code_path", ""))).name
    if _differs(entry, entry_file()):
        return f"an entry file {entry.name!r} that is not this checkout's {ENTRY_MODULE}"
    expected = carried_files()
    code = folder / CODE_DIR
    found = {p.relative_to(code).as_posix() for p in code.rglob("*") if not p.is_dir()} if code.is_dir() else set()
    unexpected = sorted(found - set(expected))
    if unexpected:
        return f"{CODE_DIR}/{unexpected[0]}, which the register stage did not write"
    changed = [rel for rel, source in expected.items() if _differs(code / rel, source)]
    if changed:
        return f"{CODE_DIR}/{changed[0]}, missing or not this checkout's"
    return None


def signature():
    """The served model's ``ModelSignature``: a string column ``video`` in, an int ``top_k`` param."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from pipeline.serving.pyfunc import DEFAULT_TOP_K

    return ModelSignature(
        inputs=Schema([ColSpec("string", "video")]),
        params=ParamSchema([ParamSpec("top_k", "integer", DEFAULT_TOP_K)]),
    )
