"""MLflow plumbing shared by the stages: where the store is, which experiment, the code's commit.

Without ``$MLFLOW_TRACKING_URI`` the store is the project's ``mlflow/mlflow.db``. DVC runs queued
and ``--temp`` experiments in a temporary copy of the repository (``.dvc/tmp/exps/...``), where a
relative ``mlflow/`` would be a new store deleted afterwards; it tells every stage command the
workspace the experiment came from in ``$DVC_ROOT``, and the store is found there. Experiment
runs are tagged with DVC's ``$DVC_EXP_NAME`` and ``$DVC_EXP_BASELINE_REV``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.core.errors import StageError

DEFAULT_STORE_DIR = Path("mlflow")
ARTIFACTS_DIR = "artifacts"  # a local store's artifacts, beside its mlflow.db
ROOT_TAG = "a2nets.artifact_root"  # experiment tag: the artifact root the experiment was made with
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the UI opens an experiment in the view this names
MODEL_TRAINING = "custom_model_development"  # MLflow's "Model training" view (not the GenAI one)
RECORDED_PATHS = (  # (table, column) where a SQLite store records absolute artifact paths
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)
LEGACY_ROOT = f"file://%/{DEFAULT_STORE_DIR.name}/{ARTIFACTS_DIR}"  # (LIKE) the root of stores made before the tag
BUSY_TIMEOUT_S = 60  # how long a rewrite of a local store waits for another process's write to end


def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory (a run's code), ``unknown`` outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


DVC_EXPERIMENT_TAGS = {"dvc.exp_name": "DVC_EXP_NAME", "dvc.baseline_rev": "DVC_EXP_BASELINE_REV"}


def project_root() -> Path:
    """The workspace whose store a stage writes: ``$DVC_ROOT`` (set by DVC for every stage command;
    for a queued or temp experiment, the workspace it was queued from), else the working directory."""
    root = os.environ.get("DVC_ROOT")
    if not root:
        return Path.cwd()
    if not Path(root, "dvc.yaml").is_file():
        raise StageError(
            f"DVC_ROOT={root} is not a DVC project (no dvc.yaml there), so the experiment's MLflow store "
            "cannot be found; run the experiment from its project or set MLFLOW_TRACKING_URI"
        )
    return Path(root)


def dvc_experiment_tags() -> dict[str, str]:
    """``dvc.exp_name`` and ``dvc.baseline_rev`` of the DVC experiment running this stage (none outside one)."""
    return {tag: os.environ[var] for tag, var in DVC_EXPERIMENT_TAGS.items() if os.environ.get(var)}


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's SQLite store ``mlflow/mlflow.db`` (absolute).

    For the stages: the project is ``project_root()``, and the folder is created when missing.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_store(uri)
        return uri
    store = project_root() / DEFAULT_STORE_DIR
    store.mkdir(exist_ok=True)
    check_local_store(store / "mlflow.db")
    # Absolute: MLflow caches stores by URI, so a relative one would follow no later chdir.
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


SQLITE_HEADER = b"SQLite format 3\x00"


def check_local_store(db: Path) -> None:
    """StageError (one line) when the SQLite store ``db`` exists but cannot be used: empty (MLflow
    would silently make a new store in it), not SQLite, or damaged (``PRAGMA quick_check``, which
    reads the whole file: a few ms for a project's store). Nothing is written to such a file."""
    if not db.is_file():
        return
    fix = "restore it from a backup, or move it away to start a new store"
    with open(db, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        raise StageError(f"MLflow store {db} is empty (0 bytes), not a store; {fix}")
    if header != SQLITE_HEADER:
        raise StageError(f"MLflow store {db} is not an SQLite database; {fix}")
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            verdict = con.execute("pragma quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as err:
        verdict = str(err)
    if verdict != "ok":
        raise StageError(f"MLflow store {db} is damaged ({verdict[:80]}); {fix}")


@contextlib.contextmanager
def store_lock(uri: str, purpose: str) -> Iterator[None]:
    """Hold an exclusive file lock ``<mlflow.db>.<purpose>.lock`` beside a local SQLite store (nothing
    for other stores): what SQLite's busy timeout cannot make safe between processes (creating the
    tables or an experiment, numbering versions, a promotion's read-then-write) runs under it."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    with open(db.with_name(f"{db.name}.{purpose}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


FULL_DISK_SAYS = ("database or disk is full", "No space left on device")  # SQLite's SQLITE_FULL, ENOSPC


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the errors it wraps (``__cause__``, else ``__context__``), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an error it wraps says a disk is full: an OSError ENOSPC, or SQLite's
    'database or disk is full' (raised by sqlite3, or wrapped by SQLAlchemy and MLflow)."""
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC) or any(says in str(e) for says in FULL_DISK_SAYS)
        for e in causes(err)
    )


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (which may not exist yet)."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def written_path(err: BaseException, uri: str | None) -> Path:
    """The file a disk-full ``err`` was writing: the OSError's destination (``filename2`` of a copy),
    a local store's database for SQLite's error, else the fullest of the store and temp folders."""
    for e in causes(err):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and (e.filename2 or e.filename):
            return Path(os.fsdecode(e.filename2 or e.filename))
    db = sqlite_file(uri) if uri else None
    if db is not None and any("database or disk is full" in str(e) for e in causes(err)):
        return db
    folders = [Path(tempfile.gettempdir()), Path.cwd(), *([db.parent] if db is not None else [])]
    return min(folders, key=lambda folder: shutil.disk_usage(mount_point(folder)).free)


def stage_store_uri() -> str | None:
    """The store a stage writes (``tracking_uri``'s), neither created nor checked; None when unknown."""
    try:
        root = project_root()
    except StageError:
        return None
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / DEFAULT_STORE_DIR / 'mlflow.db').resolve()}"


def full_disk_error(err: BaseException, uri: str | None, command: str) -> StageError | None:
    """One line for a full disk under ``err`` (None for any other error): which filesystem, what
    was being written, how much is free, and to run ``command`` again after freeing space. ``uri``
    is the store written (None: the stages' store, ``stage_store_uri``)."""
    if not disk_full(err):
        return None
    path = written_path(err, uri or stage_store_uri())
    mount = mount_point(path)
    free = shutil.disk_usage(mount).free
    return StageError(
        f"no space left on the disk mounted at {mount} (writing {path}; {free:,} bytes free now): "
        f"free space there, then run {command} again"
    )


SQL_ERROR_LOGGER = "mlflow.store.db.utils"  # logs a failed SQL statement's traceback, then raises it


@contextlib.contextmanager
def full_disk_is_one_line(uri: str | None, command: str) -> Iterator[None]:
    """Turn a full disk met inside the block (the store's database, its artifacts, temp files) into
    ``full_disk_error``'s StageError instead of a traceback; other errors pass unchanged. MLflow's
    own log of a failed SQL statement is held back meanwhile: the error it raises says the same."""
    logger = logging.getLogger(SQL_ERROR_LOGGER)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    except StageError:
        raise
    except Exception as err:
        full = full_disk_error(err, uri, command)
        if full is None:
            raise
        raise full from None
    finally:
        logger.setLevel(level)


def project_store(start: Path) -> Path | None:
    """The store of the project around ``start``: the nearest ``mlflow/`` folder, in ``start`` or
    a parent, that holds an ``mlflow.db`` or sits beside a ``dvc.yaml``; None when there is none."""
    for folder in (start, *start.parents):
        store = folder / DEFAULT_STORE_DIR
        if (store / "mlflow.db").is_file() or (store.is_dir() and (folder / "dvc.yaml").is_file()):
            return store
    return None


def existing_tracking_uri() -> str:
    """For the command line: ``$MLFLOW_TRACKING_URI`` or the project's store; never creates one.

    Run from anywhere inside the project (``docs/`` too); outside it, one line says where it
    looked and how to point at a store. A local store that was moved is relocated first.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_store(uri)
    else:
        store = project_store(Path.cwd().resolve())
        if store is None:
            raise StageError(
                f"no MLflow store: no mlflow/mlflow.db (or mlflow/ beside dvc.yaml) in {Path.cwd()} "
                "or its parents; run a2net inside the project or set MLFLOW_TRACKING_URI"
            )
        uri = f"sqlite:///{(store / 'mlflow.db').resolve()}"
    db = sqlite_file(uri)
    if db is not None and db.is_file():
        check_local_store(db)
        relocate_moved_store(db)
    return uri


@functools.cache
def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """StageError (one line) unless the tracking store ``uri`` answers: a server's ``/health``
    (MLflow's own client would retry a dead server for minutes), a PostgreSQL database's login, an
    SQLite file's ``check_local_store``. Once per process and URI."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:
            return  # it answers (an authenticating proxy may refuse /health)
        except OSError as err:
            reason = getattr(err, "reason", err)
            raise StageError(
                f"the MLflow tracking server {uri} does not answer ({reason}); start it (a2net server) "
                "or fix MLFLOW_TRACKING_URI"
            ) from None
    elif scheme.startswith("postgresql"):
        from pipeline.tracking.database import check_database

        check_database(uri)
    elif sqlite_file(uri) is not None:
        check_local_store(sqlite_file(uri))


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(db: Path) -> str:
    """Where a local store keeps its artifacts: ``artifacts/`` beside its database, as a file URI."""
    return (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def active_experiments(uri: str) -> list[tuple[str, str]]:
    """(id, name) of a local store's active experiments but ``Default``, by id; read-only, and
    nothing for a missing database or a store that is not SQLite (a server lists its own)."""
    db = sqlite_file(uri)
    if db is None or not db.is_file():
        return []
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        rows = con.execute(
            "select experiment_id, name from experiments where lifecycle_stage = 'active' and name != 'Default' "
            "order by experiment_id"
        ).fetchall()
    return [(str(experiment_id), name) for experiment_id, name in rows]


def relocate_moved_store(db: Path) -> str | None:
    """Point a copied or moved local store at the artifacts beside it; return the root it had.

    MLflow records absolute artifact paths (experiments, runs, logged models, model versions),
    so a store copied with its checkout would keep writing into the original tree. The project's
    experiments carry the root they were made with (tag ``a2nets.artifact_root``); when it is not
    this database's, every recorded path under it is rewritten to this store's own root.
    """
    new_root = artifact_root(db)
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
        if not relocation_pending(con, new_root):
            return None  # the usual case: no write, so no wait for another process's write lock
    with write_transaction(db) as con:
        adopt_legacy_experiments(con)
        adopt_default_experiment(con, new_root)
        tagged = dict(con.execute("select experiment_id, value from experiment_tags where key = ?", (ROOT_TAG,)))
        old_roots = {root for root in tagged.values() if root != new_root}
        for old in old_roots:
            for table, column in RECORDED_PATHS:
                con.execute(
                    f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?",
                    (new_root, len(old) + 1, len(old), old),
                )
            con.execute("update experiment_tags set value = ? where key = ? and value = ?", (new_root, ROOT_TAG, old))
    for old in sorted(old_roots):
        print(
            f"note: MLflow store {db} was moved: its artifact paths now lead to {new_root}, not {old}", file=sys.stderr
        )
    return next(iter(sorted(old_roots)), None)


def relocation_pending(con: sqlite3.Connection, root: str) -> bool:
    """Whether an experiment of the store must be adopted or moved to ``root``: experiment 0 or a
    legacy one not yet tagged, or one tagged with another root. False for a new, empty store."""
    if not con.execute("select 1 from sqlite_master where name = 'experiment_tags'").fetchone():
        return False
    return bool(
        con.execute(
            "select exists (select 1 from experiments e where not exists (select 1 from experiment_tags t"
            " where t.experiment_id = e.experiment_id and t.key = ? and t.value = ?) and (e.experiment_id = 0"
            " or e.artifact_location like ?"
            " or e.experiment_id in (select experiment_id from experiment_tags where key = ?)))",
            (ROOT_TAG, root, LEGACY_ROOT, ROOT_TAG),
        ).fetchone()[0]
    )


@contextlib.contextmanager
def write_transaction(db: Path) -> Iterator[sqlite3.Connection]:
    """One transaction on ``db`` that holds the write lock from its first read (``begin immediate``),
    committed at the end or rolled back on an error.

    A deferred transaction that reads and then writes would fail at once ("database is locked") when
    another process (a training logging metrics, the UI) writes in between: SQLite cannot wait for a
    lock while it holds a read. Taking the write lock first lets it wait its turn instead.
    """
    with closing(sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as con:
        con.execute("begin immediate")
        try:
            yield con
        except BaseException:
            con.execute("rollback")
            raise
        con.execute("commit")


def adopt_default_experiment(con: sqlite3.Connection, root: str) -> None:
    """Give experiment 0 ("Default") a place beside the store, tagged like the project's, so that it
    moves with the store: MLflow makes it under the first command's working directory
    (``<cwd>/mlruns/0``), outside the store and left behind by a move. Its runs' paths follow."""
    row = con.execute("select artifact_location from experiments where experiment_id = 0").fetchone()
    tagged = con.execute("select 1 from experiment_tags where experiment_id = 0 and key = ?", (ROOT_TAG,)).fetchone()
    if row is None or tagged:
        return
    old, new = str(row[0]), f"{root}/0"
    con.execute("update experiments set artifact_location = ? where experiment_id = 0", (new,))
    con.execute(
        "update runs set artifact_uri = ? || substr(artifact_uri, ?) where experiment_id = 0 "
        "and substr(artifact_uri, 1, ?) = ?",
        (new, len(old) + 1, len(old), old),
    )
    con.execute("insert into experiment_tags (key, value, experiment_id) values (?, ?, 0)", (ROOT_TAG, root))


def adopt_legacy_experiments(con: sqlite3.Connection) -> None:
    """Tag the root of experiments made before the root was recorded (always ``.../mlflow/artifacts``)."""
    legacy = con.execute(
        "select experiment_id, artifact_location from experiments where artifact_location like ? "
        "and experiment_id not in (select experiment_id from experiment_tags where key = ?)",
        (LEGACY_ROOT, ROOT_TAG),
    ).fetchall()
    con.executemany(
        "insert into experiment_tags (key, value, experiment_id) values (?, ?, ?)",
        [(ROOT_TAG, location, experiment_id) for experiment_id, location in legacy],
    )


def setup_mlflow(experiment: str) -> str:
    """Point MLflow at the store and return the id of ``experiment`` (created when new).

    On a local SQLite store, artifacts go to ``artifacts/`` beside the database whatever the
    working directory (and follow the store when it is moved); a remote server keeps its own
    artifact root. The experiment opens in the UI's model-training view.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with store_lock(uri, "setup"):  # two first runs at once would both create the tables
        return _experiment_id(experiment, sqlite_file(uri))


def _experiment_id(experiment: str, db: Path | None) -> str:
    """The id of ``experiment`` in the current store (created when new; see ``setup_mlflow``)."""
    import mlflow

    if db is not None and db.is_file():
        relocate_moved_store(db)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        if existing.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            mlflow.MlflowClient().set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return existing.experiment_id
    tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING}
    if db is None:
        return mlflow.create_experiment(experiment, tags=tags)
    root = artifact_root(db)
    return mlflow.create_experiment(experiment, artifact_location=root, tags={**tags, ROOT_TAG: root})
