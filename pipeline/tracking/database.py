"""A PostgreSQL store of MLflow checked before anything is started against it, and its URI
shown without its password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pipeline.core.errors import StageError, masked

ROLE = "mlflow"  # the cluster's superuser, and the database MLflow uses
UNPRIVILEGED = "nobody"


def check_database(uri: str, timeout_s: int = 5) -> None:
    """Connect to the PostgreSQL database ``uri`` once; StageError (one line) if that fails."""
    import psycopg

    parts = urlsplit(uri)
    libpq_uri = urlunsplit(parts._replace(scheme="postgresql"))  # drop SQLAlchemy's "+driver"
    try:
        psycopg.connect(libpq_uri, connect_timeout=timeout_s).close()
    except psycopg.Error as err:
        reason = str(err).strip().splitlines()[0].split("failed: ")[-1]
        raise StageError(f"cannot use the PostgreSQL database {masked(uri)}: {reason}; {_hint(reason)}") from None


def _hint(reason: str) -> str:
    if "password" in reason:
        return "check the user and password in the URI"
    if "does not exist" in reason:
        return "create it (createdb) or fix the URI"
    return "check that the server runs and the host and port in the URI"
