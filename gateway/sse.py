"""The one server-sent-events helper: how every stream is framed.

A stream is `data: <json>\n\n` events and ends with `data: [DONE]\n\n`. An error after
the first byte (when the HTTP status is already sent) is one final event carrying the
OpenAI error body, followed by `[DONE]`.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from schemas.errors import APIError

DONE = "data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(payload: BaseModel) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


def error_event(err: APIError) -> str:
    return f"data: {json.dumps(err.body())}\n\n"
