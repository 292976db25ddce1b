"""DVC remotes, checked before DVC runs: ``a2net push`` / ``a2net pull`` are ``dvc push`` / ``dvc pull``
that first make sure the remote is configured and its location exists, so that a typo in a name
or URL is one line and writes nothing (DVC itself would create a new folder on push, or check
out a partial workspace on pull)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StageError


@dataclass(frozen=True)
class CheckedRemote:
    name: str
    url: str


def checked_remote(root: Path, name: str | None = None) -> CheckedRemote:
    """The DVC remote ``name`` (default: the project's default remote) of the project at ``root``.

    StageError unless it is configured and its location exists: for a local remote its folder,
    for an object store its bucket (a new prefix in a bucket is fine).
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
        url = remotes[name]["url"]
        try:
            remote = repo.cloud.get_remote(name)
            location = remote.path if remote.fs.protocol in ("local", "file") else remote.path.split("/")[0]
            exists = remote.fs.exists(location)
        except (DvcException, OSError) as err:
            raise StageError(f"DVC remote {name!r} ({url}) cannot be reached: {err}") from None
    if not exists:
        raise StageError(
            f"DVC remote {name!r} ({url}) does not exist; create it (mkdir -p, or the bucket) "
            f"or fix it with `dvc remote modify {name} url URL`"
        )
    return CheckedRemote(name, url)


def transfer(root: Path, direction: str, remote: str | None, targets: list[str]) -> int:
    """``dvc push`` or ``dvc pull`` (``direction``) of ``targets`` with the checked remote; DVC's
    progress and messages go to the terminal. Returns 0, or raises StageError when DVC fails."""
    checked = checked_remote(root, remote)
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc), direction, "-r", checked.name, *targets], cwd=root)
    if done.returncode != 0:
        raise StageError(f"dvc {direction} -r {checked.name} ({checked.url}) failed; DVC's message is above")
    return 0
