"""``a2net``'s own surface, without a store: help texts, exit codes, the UI's command and env."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser, main, ui_command
from pipeline.registry.server import ui_env


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


PARSER = build_parser()
PARSERS = {"a2net": PARSER, **{f"a2net {name}": p for name, p in _subparsers(PARSER).items()}}


@pytest.mark.parametrize(
    "prog, dest",
    [(prog, action.dest) for prog, parser in PARSERS.items() for action in parser._actions],
)
def test_every_option_and_positional_has_help(prog: str, dest: str) -> None:
    [action] = [a for a in PARSERS[prog]._actions if a.dest == dest]
    assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), (prog, action.option_strings)


@pytest.mark.parametrize("prog", PARSERS)
def test_every_command_has_a_plain_description_and_an_epilog_with_examples_and_exit_codes(prog: str) -> None:
    parser = PARSERS[prog]
    assert isinstance(parser.formatter_class, type)
    assert issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    assert parser.description and "``" not in parser.description and ":func:" not in parser.description
    examples = parser.epilog.split("examples:\n", 1)[1]
    assert any(line.strip().startswith(f"{prog} ") or line.strip() == prog for line in examples.splitlines())
    help_text = parser.format_help()
    assert "exit codes:" in help_text and "``" not in help_text
    assert "\n  0  " in help_text and "\n  2  " in help_text


def test_promote_help_explains_the_gate_margin_force_and_rollback() -> None:
    text = " ".join(PARSERS["a2net promote"].format_help().split())
    for says in (
        "promote.metric",
        "promote.margin",
        "production only takes the staging version",
        '--force --reason "why"',
        "recorded",
        "--rollback",
        "1 refused by the gate",
        "2 bad input",
    ):
        assert says in text, says


def test_help_exits_0_and_a_bad_command_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["promote", "--help"])
    assert exit_.value.code == 0 and "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["nonsense"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: a2net: ")


def test_the_ui_runs_one_worker_without_mlflows_job_runner() -> None:
    command = ui_command(5123, "sqlite:////tmp/x/mlflow.db")
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--port") + 1] == "5123" and command[command.index("--host") + 1] == "127.0.0.1"
    env = ui_env({"PATH": "/usr/bin"})
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and env["PATH"] == "/usr/bin"
    assert ui_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_a2net_ui_starts_mlflow_with_that_command_and_env(monkeypatch, tmp_path, capsys) -> None:
    import pipeline.cli.serve as serve_cli

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    started = {}
    monkeypatch.setattr(serve_cli.os, "execve", lambda path, argv, env: started.update(path=path, argv=argv, env=env))
    main(["ui", "--port", "5123"])
    assert started["argv"] == ui_command(5123, uri) and started["path"] == started["argv"][0]
    assert started["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == f"MLflow UI on http://127.0.0.1:5123 ({' '.join(started['argv'][1:])}; no job runner)"


def test_the_ui_lists_the_active_experiments_but_default_without_writing(tmp_path) -> None:
    import sqlite3

    from pipeline.tracking.store import active_experiments

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("create table experiments (experiment_id integer, name text, lifecycle_stage text)")
        con.executemany(
            "insert into experiments values (?, ?, ?)",
            [(10, "later", "active"), (0, "Default", "active"), (2, "a2nets", "active"), (3, "gone", "deleted")],
        )
    con.close()
    before = db.read_bytes()
    assert active_experiments(f"sqlite:///{db}") == [("2", "a2nets"), ("10", "later")]
    assert db.read_bytes() == before
    assert active_experiments(f"sqlite:///{tmp_path}/missing.db") == [] and not (tmp_path / "missing.db").exists()
    assert active_experiments("http://127.0.0.1:5000") == []
