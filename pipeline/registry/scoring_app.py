"""The scoring app ``a2net serve`` runs: MLflow's own, behind a guard on what a request may be.

MLflow's scoring server reads a whole request body into memory and parses it as it comes: a
body of gigabytes is held (several times over), JSON nested 100,000 deep is an HTTP 500. The
guard refuses a body over ``max_request_bytes`` (``register.serving.max_request_mb``) with a 413
before reading it when its Content-Length says so, or as soon as the bytes read pass it, and JSON
nested deeper than ``MAX_JSON_DEPTH`` with a 400, before MLflow sees either. A plain
``mlflow models serve`` has neither: put a proxy with a body limit in front of it
(docs/registry.md#serving).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

from pipeline.serving.bounds import ServingBounds

MODEL_ENV = "A2NET_SERVE_MODEL"  # the model folder the app serves
MAX_JSON_DEPTH = 32  # a request is {"dataframe_split": {"data": [[...]]}}: 4 levels
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


_CHUNK = 1 << 20


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in JSON text ``body`` (what is inside strings is skipped).

    Counted a MiB at a time, so the memory it takes does not grow with the body.
    """
    outside = np.frombuffer(_STRING.sub(b'""', body), np.uint8)
    depth = deepest = 0
    for start in range(0, len(outside), _CHUNK):
        part = outside[start : start + _CHUNK]
        steps = ((part == ord("[")) | (part == ord("{"))).astype(np.int32) - ((part == ord("]")) | (part == ord("}")))
        levels = depth + np.cumsum(steps, dtype=np.int32)
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


class RequestGuard:
    """ASGI middleware: ``POST /invocations`` bodies bounded in size and nesting before ``app`` reads them."""

    def __init__(self, app: Callable, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await self.refuse(send, 413, f"a body of {declared.decode('latin-1')[:20]} bytes")
        body = await self.read(receive)
        if body is None:
            return await self.refuse(send, 413, f"a body of more than {self.max_bytes} bytes")
        if json_depth(body) > self.max_depth:
            return await _answer(
                send,
                400,
                f"the request nests JSON deeper than {self.max_depth} levels; send "
                '{"dataframe_split": {"columns": ["video"], "data": [["<base64>"]]}}',
            )
        return await self.app(scope, _replay(body, receive), send)

    async def read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes ``max_bytes`` (the rest is never read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def refuse(self, send: Send, status: int, what: str) -> None:
        limit = f"over the {self.max_bytes}-byte limit per request (register.serving.max_request_mb)"
        await _answer(send, status, f"{what}, {limit}; send fewer or smaller videos per request")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the connection sends next (a disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _answer(send: Send, status: int, message: str) -> None:
    """An MLflow-style JSON error (``error_code``, ``message``) with ``status``, connection closed."""
    content = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def create_app() -> RequestGuard:
    """uvicorn factory: MLflow's scoring app for the model in ``$A2NET_SERVE_MODEL``, guarded."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
    bounds = ServingBounds.from_config(model.model_config)
    return RequestGuard(scoring_server.init(model), bounds.max_request_bytes)
