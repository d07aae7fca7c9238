"""Request bodies read with a size cap, as JSON objects (shared by the HTTP servers of ``mmal.serve``).

A body larger than the cap is refused without being read: by its ``Content-Length``, or as
soon as a body without one passes the cap (:class:`BodyTooLarge`, which a server answers
with 413). Bad JSON is a :class:`BadBody` with a one-line message (a server answers 400).
"""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    """The request body is larger than the cap."""


class BadBody(ValueError):
    """The request body is not a JSON object; the message is one line."""


async def read_capped(request, limit: int) -> bytes:
    """The body of a Starlette ``request``, at most ``limit`` bytes (else :class:`BodyTooLarge`)."""
    length = request.headers.get("content-length", "")
    if length.strip().isdigit() and int(length) > limit:
        raise BodyTooLarge  # refused unread
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(raw: bytes) -> dict:
    """``raw`` parsed as a JSON object (:class:`BadBody` naming what is wrong otherwise)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadBody(f"request body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadBody(f"request body is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(body, dict):
        raise BadBody(f"request body must be a JSON object, got a JSON {type(body).__name__}")
    return body
