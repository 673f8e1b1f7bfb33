"""`uvicorn bench.receiver.app:create_app --factory`: raw ASGI, so the receiver is never the bottleneck."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

_LEAD_ID = re.compile(rb'"lead_id"\s*:\s*"([0-9a-f-]{36})"')
Scope = dict[str, Any]


class Receiver:
    """Answers 200 to every POST and remembers when each lead id (or webhook-id) first arrived."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.arrivals: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if scope["method"] == "GET" and path == "/_stats":
            payload = {"count": self.count, "first": self.first, "last": self.last, "arrivals": self.arrivals}
            await _respond(send, 200, orjson.dumps(payload))
            return
        if path == "/_reset":
            self.reset()
        elif path == "/readyz":
            pass
        else:
            now = time.time()
            self.count += 1
            self.first = self.first or now
            self.last = now
            match = _LEAD_ID.search(body)
            key = match.group(1).decode() if match else _header(scope, b"webhook-id") or str(self.count)
            self.arrivals.setdefault(key, now)
        await _respond(send, 200, b"")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> Receiver:
    return Receiver()
