"""``data.executor=dask``: the clips decoded by the workers of a running Dask cluster.

Why Dask (``distributed``) rather than Ray: it is pure Python and light (the ``cluster`` extra),
and a cluster is plain processes, ``dask scheduler`` and ``dask worker <address>``, with no
daemon, no Java and no object store to size; when a worker dies, the scheduler reruns its tasks
on the others. This module is imported only when ``data.executor=dask``.

Each clip is one task running ``frames.process_clip``, the local pool's function, once the
worker has shown the build this process records in ``provenance.json`` (toolchain and decoding
code). Results come back in the jobs' order through a bounded window of tasks in flight, so the
shards depend neither on which worker decoded a clip nor on when it finished, and finished
results never pile up. Workers read the videos themselves (the jobs carry absolute paths, which
must name the same files on every worker); only this process writes — the shards, their
``.state/`` records and the manifest — so ``data.shards_dir`` need not be visible to the workers,
and a run killed whole resumes from those records as a local run does.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING

from pipeline.core.errors import StageError
from pipeline.core.imports import PROJECT_ROOT, import_closure
from pipeline.data.frames import ClipJob, ClipResult, Decoder, process_clip
from pipeline.data.provenance import toolchain

if TYPE_CHECKING:
    from distributed import Client, Future

IN_FLIGHT_PER_THREAD = 2  # tasks submitted ahead per worker thread: busy workers, bounded memory


@functools.cache
def worker_build(ffmpeg_setting: str) -> dict[str, str]:
    """What decides a process's clip bytes besides the job: its toolchain and the md5 of the
    decoding code (``frames``' import closure), so that a worker on another checkout is caught."""
    digest = hashlib.md5()
    for path in sorted(import_closure("pipeline.data.frames")):
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {**toolchain(ffmpeg_setting), "decoding_code_md5": digest.hexdigest()}


def decode_clip(job: ClipJob, build: dict[str, str]) -> ClipResult:
    """The task: ``process_clip`` on a worker whose build is the client's, else one-line StageError."""
    own = worker_build(job.ffmpeg_setting)
    differ = [key for key in build if own.get(key) != build[key]]
    if differ:
        from distributed import get_worker

        raise StageError(
            f"Dask worker {get_worker().address} has another {', '.join(differ)} than this run; start the "
            "workers from the same checkout and environment as the stage"
        )
    return process_clip(job)


def connect_timeout() -> float:
    """Seconds to wait for the scheduler and for a worker: Dask's ``distributed.comm.timeouts.connect``
    (30 s unless set, e.g. ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``)."""
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds"))


def connect(address: str) -> Client:
    """A client of the scheduler at ``address`` that has a worker; one-line StageError otherwise."""
    from distributed import Client

    wait = connect_timeout()
    try:
        client = Client(address, timeout=wait, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise StageError(
            f"cannot reach the Dask scheduler at {address} ({err}); start it (`dask scheduler`) and its workers, "
            "or set data.scheduler to its address, or data.executor=local"
        ) from None
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        client.close()
        raise StageError(
            f"the Dask scheduler at {address} has no worker after {wait:g} s; start some (`dask worker {address}`)"
        ) from None
    return client


def result_of(future: Future, job: ClipJob, address: str) -> ClipResult:
    """A task's result; a clip that kept killing workers, or a lost scheduler, as one line."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise StageError(
            f"the Dask workers decoding clip {job.annotation.clip_id} ({job.video}) died too often "
            "(distributed.scheduler.allowed-failures); check their logs (memory?) or decode with data.executor=local"
        ) from None
    except (CancelledError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageError(
            f"lost the Dask scheduler at {address} ({reason}); restart it and its workers and rerun: the finished "
            "shards are kept"
        ) from None


def decode_on_cluster(client: Client, jobs: list[ClipJob], build: dict[str, str]) -> Generator[ClipResult, None, None]:
    """Results of ``jobs`` in order, each decoded by a task on the cluster, with at most
    ``IN_FLIGHT_PER_THREAD`` tasks per worker thread submitted ahead; closing it cancels those."""
    window = IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))
    todo: Iterator[ClipJob] = iter(jobs)
    pending: deque[tuple[Future, ClipJob]] = deque()
    try:
        while True:
            for job in todo:
                pending.append((client.submit(decode_clip, job, build, pure=False), job))
                if len(pending) >= window:
                    break
            if not pending:
                return
            future, job = pending.popleft()
            yield result_of(future, job, client.scheduler.address)
    finally:
        client.cancel([future for future, _ in pending])


@contextlib.contextmanager
def dask_decoder(address: str, ffmpeg_setting: str) -> Iterator[Decoder]:
    """A decoder on the cluster at ``address``, connected first (an unreachable one is one line
    before anything is written) and closed after. Meanwhile the client's own log is quiet: a lost
    scheduler is ``result_of``'s one line, not its reconnection traceback."""
    client = connect(address)
    log = logging.getLogger("distributed.client")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield functools.partial(decode_on_cluster, client, build=worker_build(ffmpeg_setting))
    finally:
        client.close()
        log.setLevel(level)
