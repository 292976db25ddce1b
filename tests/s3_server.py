"""A real S3 API over HTTP on loopback for the scale-out tests: moto's standalone server.

``S3Server.start()`` runs ``moto_server`` as a subprocess on a free 127.0.0.1 port; ``env`` holds
the variables every S3 client of the project reads (boto3, s3fs, DVC's dvc-s3, MLflow): a fake
key pair, the region and ``AWS_ENDPOINT_URL``, so nothing leaves the machine. ``stop()`` and
``start()`` again give a store that goes away and comes back empty (moto keeps its buckets in
memory); a ``Relay`` in front of it gives one that comes back with its data.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers import free_port, stop_group

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
KEY_ID, SECRET = "a2nets-test-key", "a2nets-test-secret"  # moto accepts any; never a real key


@dataclass
class S3Server:
    """One ``moto_server`` process (``start`` / ``stop``) and the environment its clients need."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client reads to reach this server (and only it)."""
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials
        }

    def start(self, timeout_s: float = 30) -> S3Server:
        """Start the server and wait until it answers."""
        command = [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"moto_server did not answer on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        """Stop the server (its buckets are gone)."""
        if self.process is not None:
            stop_group(self.process)
        self.process = None

    def make_bucket(self, name: str) -> None:
        """Create bucket ``name`` (boto3, as a user's set-up script would)."""
        self.client().create_bucket(Bucket=name)

    def client(self):
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> str:
        """Copy ``folder``'s files to ``s3://bucket/prefix/...``; return that URL."""
        client = self.client()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return f"s3://{bucket}/{prefix}"


class Relay:
    """A TCP relay from its own loopback port to ``target``'s: ``stop()`` is a store that stops
    answering (connections refused, open ones cut), ``start()`` the same store back, data intact."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        for sock in [listener, *self._open]:
            _cut(sock)
        self._open = []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either closes, then cut both."""
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
    except OSError:
        pass
    _cut(source)
    _cut(sink)


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
