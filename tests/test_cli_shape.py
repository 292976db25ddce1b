"""``a2net`` stays a thin layer over the library: small modules, short functions, no SQL.

Each handler in ``pipeline/cli/`` parses, calls the library and formats the result; queries of the
store and the promotion's logic live in ``pipeline/tracking`` and ``pipeline/registry``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[1] / "pipeline" / "cli"
MODULES = sorted(CLI.glob("*.py"))
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 40
SQL = re.compile(  # a query's keywords, as a string would hold them
    r"\bselect\s[\s\S]+\sfrom\s+\w|\binsert\s+into\b|\bdelete\s+from\b|\bupdate\s+\w+\s+set\b"
    r"|\b(create|drop|alter)\s+table\b",
    re.IGNORECASE,
)


def module_lines(tree: ast.Module, text: str) -> list[str]:
    return [f"{len(text.splitlines())} lines"] if len(text.splitlines()) > MAX_MODULE_LINES else []


def long_functions(tree: ast.Module, text: str) -> list[str]:
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def sqlite_imports(tree: ast.Module, text: str) -> list[str]:
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    return [name for name in names if name.split(".")[0] in ("sqlite3", "sqlalchemy", "psycopg", "psycopg2")]


def sql_strings(tree: ast.Module, text: str) -> list[str]:
    return [
        node.value[:60]
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]


CHECKS = {  # what a module of the CLI may not have: (finder, why)
    "longer than 300 lines": (module_lines, "split it by command group"),
    "functions longer than 40 lines": (long_functions, "move the logic into the library"),
    "sqlite3 or database imports": (sqlite_imports, "query the store in pipeline/tracking/store.py"),
    "SQL strings": (sql_strings, "query the store in pipeline/tracking/store.py"),
}


def test_the_cli_is_a_package_of_modules() -> None:
    assert (CLI / "__init__.py").is_file() and len(MODULES) > 2, MODULES


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_each_cli_module_stays_thin(path: Path, check: str) -> None:
    finder, why = CHECKS[check]
    text = path.read_text()
    found = finder(ast.parse(text), text)
    assert not found, f"pipeline/cli/{path.name} has {check}: {found}; {why}"


@pytest.mark.parametrize(
    ("check", "source", "flagged"),
    [
        ("SQL strings", 'q = "select experiment_id, name from experiments where x = 1"', True),
        ("SQL strings", "q = 'UPDATE runs SET name = 1'", True),
        ("SQL strings", "q = 'create table t (x)'", True),
        ("SQL strings", 'help = "print the versions table and exit"', False),
        ("sqlite3 or database imports", "import sqlite3", True),
        ("sqlite3 or database imports", "from sqlite3 import connect", True),
        ("sqlite3 or database imports", "import json", False),
        ("functions longer than 40 lines", "def f():\n" + "    x = 1\n" * 39, False),
        ("functions longer than 40 lines", "def f():\n" + "    x = 1\n" * 40, True),
        ("longer than 300 lines", "x = 1\n" * 300, False),
        ("longer than 300 lines", "x = 1\n" * 301, True),
    ],
)
def test_the_checks_find_what_they_look_for(check: str, source: str, flagged: bool) -> None:
    finder, _ = CHECKS[check]
    assert bool(finder(ast.parse(source), source)) is flagged
