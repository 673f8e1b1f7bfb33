"""The fast path's answer in one socket write under uvicorn's httptools protocol, byte for byte what uvicorn's two
writes would have sent (ingest.api.fast.send_answer)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from ingest.api.fast import send_answer

HEADERS = [
    (b"content-length", b"15"),
    (b"content-type", b"application/json"),
    (b"x-correlation-id", b"c0ffee"),
]
BODY = b'{"lead_id":"x"}'


class Transport:
    """Records what the server writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _cycle(transport: Transport, *, keep_alive: bool = True, responses: list[int] | None = None) -> Any:
    scope = {"type": "http", "method": "POST", "path": "/v1/leads", "http_version": "1.1", "headers": []}
    logger = logging.getLogger("test")
    return RequestResponseCycle(
        scope=scope,  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logger,
        access_logger=logger,
        access_log=False,
        default_headers=[(b"server", b"uvicorn"), (b"date", b"Sat, 05 Dec 2026 22:00:00 GMT")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: (responses if responses is not None else []).append(1),
    )


async def _uvicorns_own(keep_alive: bool = True) -> list[bytes]:
    transport = Transport()
    cycle = _cycle(transport, keep_alive=keep_alive)
    await cycle.send({"type": "http.response.start", "status": 202, "headers": list(HEADERS)})
    await cycle.send({"type": "http.response.body", "body": BODY})
    return transport.writes


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_one_write_with_the_bytes_of_uvicorns_two(keep_alive: bool) -> None:
    own = await _uvicorns_own(keep_alive)
    assert len(own) == 2  # uvicorn alone: status line and headers, then the body

    transport = Transport()
    responses: list[int] = []
    cycle = _cycle(transport, keep_alive=keep_alive, responses=responses)
    await send_answer(cycle.send, 202, list(HEADERS), BODY)

    assert transport.writes == [b"".join(own)]
    assert cycle.transport is transport  # the real transport is back
    assert cycle.response_complete and responses == [1]
    assert transport.closed is (not keep_alive)  # closed after the answer, as uvicorn does without keep-alive


async def test_a_body_that_fails_leaves_the_head_written_as_uvicorn_does() -> None:
    transport = Transport()
    cycle = _cycle(transport)
    with pytest.raises(RuntimeError, match="longer than Content-Length"):
        await send_answer(cycle.send, 202, list(HEADERS), BODY + b"!")
    own = await _uvicorns_own()
    assert transport.writes == [own[0]]
    assert cycle.transport is transport


async def test_another_server_gets_the_two_messages() -> None:
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)

    await send_answer(send, 202, list(HEADERS), BODY)
    assert messages == [
        {"type": "http.response.start", "status": 202, "headers": HEADERS},
        {"type": "http.response.body", "body": BODY},
    ]
