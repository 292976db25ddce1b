"""Where the shards' bytes come from: a local folder, or an object store named by a URL.

``data.shards_dir`` is a folder or any fsspec URL (``s3://bucket/prefix``, ``gs://...``); an
object store's credentials and endpoint come from the environment only (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO and other
S3-compatible stores), never from a config file. ``open_store`` gives a ``LocalStore`` (``os.pread``
on per-process descriptors) or a ``RemoteStore`` (fsspec: the frames one clip needs in one batched
ranged read, ``cat_ranges``), with the same methods: the shards of a split, small files (manifest,
provenance), a stream of a whole file (the index scan, the evaluation's digest) and byte spans.

A remote read that fails for a passing reason (a dropped connection, a store restarting) is
retried with backoff; one that still fails, or fails for good (no such bucket or object, denied,
no credentials), is one ``StageError`` line naming the URL, with any password in it masked.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

from pipeline.core.errors import StageError, masked
from pipeline.data.layout import shard_pattern

ShardsLocation = Path | str  # a folder, or an fsspec URL kept as text (a Path would fold its "//")
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits between the tries of a remote read
STREAM_BLOCK = 8 << 20  # bytes fetched at a time when a whole remote file is streamed
MERGE_GAP = 256 << 10  # spans fewer bytes apart are fetched in one request (a request costs more than the gap)
# failures that another try cannot mend (s3fs raises the first two; botocore the others, by name)
FOR_GOOD = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
FOR_GOOD_NAMES = {"NoCredentialsError", "PartialCredentialsError", "InvalidBucketName", "NoSuchBucket"}
T = TypeVar("T")


def is_url(location: ShardsLocation) -> bool:
    """Whether ``location`` names an object store (``scheme://...``) rather than a folder."""
    return "://" in str(location)


def shards_location(value: str | Path) -> ShardsLocation:
    """A configured ``data.shards_dir``: the URL as text, else a Path."""
    return str(value).rstrip("/") if is_url(value) else Path(value)


def local_folder(value: str | Path, stage: str) -> Path:
    """``data.shards_dir`` for a stage that writes or checks a local folder; one line for a URL."""
    if is_url(value):
        raise StageError(
            f"data.shards_dir={masked(str(value))} is an object store, but the {stage} stage works on a local "
            "folder; give it a folder and copy that to the store (e.g. aws s3 sync) for training"
        )
    return Path(value)


class LocalStore:
    """Shards in a local folder, read with ``os.pread`` on descriptors opened once per process."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._fds: dict[str, int] = {}

    def where(self, rel: str = "") -> str:
        """How messages name ``rel`` (a path under the folder)."""
        return str(self.root / rel) if rel else str(self.root)

    def exists(self) -> bool:
        return self.root.is_dir()

    def shards(self, split: str) -> list[str]:
        """The shards of ``split`` in order, as ``<split>/<split>-NNNNNN.tar``."""
        folder = self.root / split
        if not folder.is_dir():
            return []
        return sorted(f"{split}/{p.name}" for p in folder.iterdir() if shard_pattern(split).fullmatch(p.name))

    def tar_sizes(self) -> dict[str, int]:
        """Every ``.tar`` under the folder and its size (what a data fingerprint lists)."""
        return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in sorted(self.root.rglob("*.tar"))}

    def read_bytes(self, rel: str) -> bytes | None:
        """The bytes of small file ``rel``; None when there is no such file."""
        path = self.root / rel
        return path.read_bytes() if path.is_file() else None

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """``rel`` opened for reading from its start (seekable)."""
        with open(self.root / rel, "rb") as handle:
            yield handle

    def read_spans(self, rel: str, offsets: Sequence[int], sizes: Sequence[int]) -> list[bytes]:
        """The bytes at ``offsets`` (``sizes`` long) of file ``rel``."""
        fd = self._fds.get(rel)
        if fd is None:
            fd = self._fds[rel] = os.open(self.root / rel, os.O_RDONLY)
        return [os.pread(fd, int(size), int(offset)) for offset, size in zip(offsets, sizes)]

    def retried(self, rel: str, read: Callable[[], T]) -> T:
        """``read()``: a local read that fails is not a passing failure."""
        return read()

    def close(self) -> None:
        """Close this process's descriptors."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}}  # a worker process opens its own


class RemoteStore:
    """Shards under an fsspec URL; the filesystem object is made once per process."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._fs, self._pid = None, 0

    @property
    def fs(self):
        """This process's filesystem object: a forked DataLoader worker makes its own (a client's
        event loop and connections cannot cross a fork)."""
        if self._fs is None or self._pid != os.getpid():
            import fsspec

            try:
                self._fs = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)[0]
            except (ImportError, ValueError) as err:
                raise StageError(f"cannot read {masked(self.url)} (data.shards_dir): {err}") from None
            self._pid = os.getpid()
        return self._fs

    def where(self, rel: str = "") -> str:
        return masked(f"{self.url}/{rel}" if rel else self.url)

    def _path(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def exists(self) -> bool:
        return self._retried(self.where(), lambda: self.fs.isdir(self.url))

    def shards(self, split: str) -> list[str]:
        pattern = shard_pattern(split)

        def listing() -> list[str]:
            try:
                names = [name.rstrip("/").rpartition("/")[2] for name in self.fs.ls(self._path(split), detail=False)]
            except FileNotFoundError:
                return []
            return sorted(f"{split}/{name}" for name in names if pattern.fullmatch(name))

        return self._retried(self.where(split), listing)

    def tar_sizes(self) -> dict[str, int]:
        def listing() -> dict[str, int]:
            found = self.fs.find(self.url, detail=True)
            prefix = self.fs._strip_protocol(self.url).rstrip("/") + "/"
            return {
                path.removeprefix(prefix): int(info["size"])
                for path, info in sorted(found.items())
                if path.endswith(".tar")
            }

        return self._retried(self.where(), listing)

    def read_bytes(self, rel: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                return self.fs.cat_file(self._path(rel))
            except FileNotFoundError:
                return None

        return self._retried(self.where(rel), read)

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """``rel`` streamed in large blocks (seekable; read it in one pass, under ``retried``)."""
        with self.fs.open(self._path(rel), "rb", block_size=STREAM_BLOCK, cache_type="readahead") as handle:
            yield handle

    def read_spans(self, rel: str, offsets: Sequence[int], sizes: Sequence[int]) -> list[bytes]:
        """The spans in as few requests as ``MERGE_GAP`` allows (a clip's frames: one), sent at once."""
        spans = [(int(offset), int(offset) + int(size)) for offset, size in zip(offsets, sizes)]
        blocks = merged_blocks(spans, MERGE_GAP)
        paths, starts, ends = [self._path(rel)] * len(blocks), [b[0] for b in blocks], [b[1] for b in blocks]
        data = self._retried(self.where(rel), lambda: self.fs.cat_ranges(paths, starts, ends, on_error="raise"))
        return [_cut_out(span, blocks, data) for span in spans]

    def retried(self, rel: str, read: Callable[[], T]) -> T:
        """``read()`` (which reads ``rel``), tried again after a passing failure (see module doc)."""
        return self._retried(self.where(rel), read)

    def _retried(self, what: str, read: Callable[[], T]) -> T:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            try:
                return read()
            except StageError:
                raise
            except Exception as err:  # noqa: BLE001 - the store's client raises many kinds; each is sorted below
                if delay is None or isinstance(err, FOR_GOOD) or type(err).__name__ in FOR_GOOD_NAMES:
                    raise StageError(_failure_line(what, err, attempt + 1)) from None
                time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Nothing to release: the filesystem's connections go with the process."""

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None}  # a worker process makes its own (its own event loop)


def merged_blocks(spans: Sequence[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    """Sorted (start, end) blocks covering every (start, end) span, joining spans at most
    ``max_gap`` bytes apart into one block."""
    blocks: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if blocks and start - blocks[-1][1] <= max_gap:
            blocks[-1] = (blocks[-1][0], max(blocks[-1][1], end))
        else:
            blocks.append((start, end))
    return blocks


def _cut_out(span: tuple[int, int], blocks: list[tuple[int, int]], data: list[bytes]) -> bytes:
    """The bytes of ``span`` from the fetched ``data`` of the block that holds it."""
    index = bisect.bisect_right(blocks, (span[0], float("inf"))) - 1
    start = blocks[index][0]
    return data[index][span[0] - start : span[1] - start]


def _failure_line(what: str, err: Exception, tries: int) -> str:
    """One line for a failed remote read: the URL, what the store said, what to do."""
    said = masked(" ".join(str(err).split())[:200]) or type(err).__name__
    if isinstance(err, FileNotFoundError):
        advice = "check the bucket and prefix in data.shards_dir (the store has no such object)"
    elif isinstance(err, PermissionError) or "Credentials" in type(err).__name__:
        advice = "check the credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    else:
        advice = f"failed {tries} times; check that the store answers (AWS_ENDPOINT_URL) and run again"
    return f"cannot read {what}: {said}; {advice}"


def open_store(location: ShardsLocation) -> LocalStore | RemoteStore:
    """The store of ``data.shards_dir``: remote for a URL, else the local folder."""
    return RemoteStore(str(location)) if is_url(location) else LocalStore(Path(location))
