"""An SSE reply closes its events however the response ends (gateway.api.common)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from gateway.api.common import sse_reply


class Events:
    def __init__(self) -> None:
        self.closed = 0
        self.sent = 0

    def __aiter__(self) -> AsyncIterator[str]:
        return self._events()

    async def _events(self) -> AsyncIterator[str]:
        for _ in range(3):
            self.sent += 1
            yield "data: x\n\n"

    async def aclose(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_events_are_closed_when_the_client_left_before_the_first_byte(
    spec_version: str,
) -> None:
    events = Events()
    scope: dict[str, Any] = {"type": "http", "asgi": {"spec_version": spec_version}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        raise OSError("the client is gone")

    with contextlib.suppress(Exception):
        await sse_reply(events, {})(scope, receive, send)
    assert events.closed == 1 and events.sent == 0


async def test_events_are_closed_after_a_complete_response() -> None:
    events = Events()
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await sse_reply(events, {})({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert events.sent == 3 and events.closed == 1
    assert messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
