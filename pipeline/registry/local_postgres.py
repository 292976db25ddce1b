"""A local PostgreSQL cluster for a shared MLflow server (``a2net server --database local``), on
pgserver's binaries.

A local cluster lives in one folder: ``data/`` (PGDATA, made by ``initdb`` on first use, under a
temporary name renamed into place) and ``password`` (mode 0600, the ``mlflow`` role's password,
made up once). PostgreSQL refuses to run as root; as root the cluster runs as ``nobody``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.tracking.database import check_database

ROLE = "mlflow"  # the cluster's superuser, and the database MLflow uses
UNPRIVILEGED = "nobody"


def postgres_bin(name: str) -> Path:
    """The pgserver wheel's PostgreSQL executable ``name`` (no import: pgserver's own module
    takes a lock in the user's runtime folder when imported)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StageError("pgserver is not installed; pip install pgserver (make setup installs it)")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _as_unprivileged() -> dict:
    """Popen arguments that run PostgreSQL as ``nobody`` when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(UNPRIVILEGED)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _give_away(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(UNPRIVILEGED)
        os.chown(path, account.pw_uid, account.pw_gid)


@dataclass(frozen=True)
class LocalCluster:
    """A PostgreSQL cluster in ``folder`` that serves one database, ``mlflow``, on 127.0.0.1."""

    folder: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def password(self) -> str:
        return (self.folder / "password").read_text().strip()

    def uri(self, port: int) -> str:
        return f"postgresql://{ROLE}:{quote(self.password(), safe='')}@127.0.0.1:{port}/{ROLE}"

    def init(self) -> None:
        """Create the cluster unless it exists: initdb into a temporary folder, then rename."""
        if (self.data / "PG_VERSION").is_file():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "password").is_file():
            write_atomic(self.folder / "password", secrets.token_urlsafe(24) + "\n")
            (self.folder / "password").chmod(0o600)
        staging = self.folder / f".init-{os.getpid()}"
        try:
            staging.mkdir()
            _give_away(staging)
            password_file = staging / "pwfile"
            password_file.write_text(self.password() + "\n")
            _give_away(password_file)
            data = staging / "data"
            self._run_initdb(data, password_file)
            data.rename(self.data)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _run_initdb(self, data: Path, password_file: Path) -> None:
        command = [str(postgres_bin("initdb")), "-D", str(data), "-U", ROLE, f"--pwfile={password_file}"]
        command += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]
        done = subprocess.run(command, capture_output=True, text=True, **_as_unprivileged())
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise StageError(f"initdb could not create a PostgreSQL cluster in {self.folder}: {last}")

    def start(self, port: int, timeout_s: float = 30.0) -> subprocess.Popen:
        """Start the cluster's server on 127.0.0.1:``port`` (TCP only) in its own process group,
        wait until it accepts the ``mlflow`` role, and create the ``mlflow`` database if new."""
        log = self.folder / "postgres.log"
        command = [str(postgres_bin("postgres")), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(port)]
        command += ["-c", "unix_socket_directories="]
        with log.open("ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **_as_unprivileged()
            )
        maintenance = self.uri(port).rsplit("/", 1)[0] + "/postgres"
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                last = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise StageError(f"PostgreSQL in {self.folder} exited with {process.returncode}: {last[0]}")
            with contextlib.suppress(StageError):
                check_database(maintenance, timeout_s=2)
                break
            if time.monotonic() > deadline:
                process.kill()
                raise StageError(f"PostgreSQL in {self.folder} did not accept connections in {timeout_s:.0f} s")
            time.sleep(0.2)
        self._create_database(maintenance)
        return process

    def _create_database(self, maintenance_uri: str) -> None:
        import psycopg

        with psycopg.connect(maintenance_uri, autocommit=True) as connection:
            exists = connection.execute("select 1 from pg_database where datname = %s", (ROLE,)).fetchone()
            if not exists:
                connection.execute(f'create database "{ROLE}"')
