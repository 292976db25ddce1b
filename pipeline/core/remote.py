"""DVC remotes, checked before DVC runs: ``a2net push`` / ``a2net pull`` are ``dvc push`` / ``dvc pull``
that first make sure the remote is configured and its location exists, so that a typo in a name
or URL is one line and writes nothing (DVC itself would create a new folder on push, or check
out a partial workspace on pull). An S3 remote's bucket is asked directly, with DVC's own client
(its endpoint and credentials from the environment or ``dvc remote modify --local``), so that missing
credentials or an endpoint that does not answer are named as such; passwords in URLs are masked."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import StageError, masked
from pipeline.core.object_store import s3_errors, s3_problem

if TYPE_CHECKING:
    from dvc.data_cloud import Remote


@dataclass(frozen=True)
class CheckedRemote:
    name: str
    url: str


def checked_remote(root: Path, name: str | None = None) -> CheckedRemote:
    """The DVC remote ``name`` (default: the project's default remote) of the project at ``root``.

    StageError unless it is configured and its location exists: for a local remote its folder,
    for an object store its bucket (a new prefix in a bucket is fine), answering with the
    credentials DVC would use.
    """
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise StageError(f"{root} is not a DVC project; run a2net push / pull in the project") from None
    with repo:
        remotes = repo.config["remote"]
        name = name or repo.config["core"].get("remote")
        if not name:
            raise StageError("no DVC remote: add one with `dvc remote add -d storage URL` (docs/training.md)")
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise StageError(f"no DVC remote named {name!r} (configured: {known}); see `dvc remote list`")
        url = masked(remotes[name]["url"])
        try:
            problem = _location_problem(repo.cloud.get_remote(name), name)
        except (DvcException, OSError) as err:
            raise StageError(f"DVC remote {name!r} ({url}) cannot be reached: {masked(str(err))}") from None
    if problem:
        raise StageError(f"DVC remote {name!r} ({url}) {problem}")
    return CheckedRemote(name, url)


def _location_problem(remote: Remote, name: str) -> str | None:
    """Why ``remote``'s location cannot be used (None: it can). S3 is asked for the bucket itself:
    s3fs's ``exists`` says False to missing credentials and, after its retries, to a dead endpoint."""
    bucket = remote.path.split("/")[0]
    if remote.fs.protocol == "s3":
        s3 = remote.fs.fs
        try:
            s3.call_s3("head_bucket", Bucket=bucket)
        except s3_errors() as err:
            client = getattr(s3, "_s3", None)
            return f"cannot be used: {s3_problem(err, bucket, client and client.meta.endpoint_url)}"
        return None
    if remote.fs.exists(remote.path if remote.fs.protocol in ("local", "file") else bucket):
        return None
    return f"does not exist; create it (mkdir -p, or the bucket) or fix it with `dvc remote modify {name} url URL`"


def transfer(root: Path, direction: str, remote: str | None, targets: list[str]) -> int:
    """``dvc push`` or ``dvc pull`` (``direction``) of ``targets`` with the checked remote; DVC's
    progress and messages go to the terminal. Returns 0, or raises StageError when DVC fails."""
    checked = checked_remote(root, remote)
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc), direction, "-r", checked.name, *targets], cwd=root)
    if done.returncode != 0:
        raise StageError(f"dvc {direction} -r {checked.name} ({checked.url}) failed; DVC's message is above")
    return 0
