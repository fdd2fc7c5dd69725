"""Request bodies read as streams, with limits, and refused with a one-line reason.

Nothing here holds a whole request: JSON bodies are small and capped; a STOW-RS body is split
into its parts as it arrives, so at most one part (``intake.max_instance_mb``) plus one network
chunk is in memory, and the request as a whole is capped at ``intake.max_body_mb``. Beyond a
limit the answer is 413; a body that is not what its Content-Type says is 400. Reasons never
repeat what was sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

MIB = 1024 * 1024
_HEADERS_MAX = 16 * 1024


@dataclass(frozen=True)
class Part:
    """One part of a multipart body: its headers (lower-case names) and content."""

    headers: dict[str, str]
    content: bytes


def too_large(limit: int, what: str, setting: str) -> HTTPException:
    return HTTPException(413, f"{what} is over {limit // MIB} MiB (the limit is {setting})")


def _declared_length(request: Request, limit: int, setting: str) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, "the request body", setting)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is an empty object).

    Raises:
        HTTPException: 413 over ``limit`` bytes; 400 if not a JSON object.
    """
    return parse_json_object(await raw_body(request, limit))


async def raw_body(request: Request, limit: int) -> bytes:
    """The exact body bytes (for a signature check), at most ``limit``.

    Raises:
        HTTPException: 413 over the limit.
    """
    _declared_length(request, limit, "intake.max_json_kb")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the JSON body is over {limit // 1024} KiB")
    return bytes(body)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object.

    Raises:
        HTTPException: 400 if it is not one.
    """
    try:
        doc = json.loads(body) if body.strip() else {}
    except UnicodeDecodeError:
        raise HTTPException(400, "the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise HTTPException(
            400, f"the body is not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None
    if not isinstance(doc, dict):
        raise HTTPException(400, f"the body must be a JSON object, not {_json_type(doc)}")
    return doc


def _json_type(doc: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(doc), "a number"
    )


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/related; type="application/dicom"`` Content-Type.

    Raises:
        HTTPException: 415 for another type, 400 for a missing or unusable boundary.
    """
    kind, *params = content_type.split(";")
    if kind.strip().lower() != "multipart/related":
        raise HTTPException(415, "expected multipart/related; type=application/dicom")
    boundary = ""
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary or len(boundary) > 70 or not boundary.isascii():
        raise HTTPException(400, "the Content-Type has no usable multipart boundary")
    return boundary.encode()


async def multipart_parts(
    request: Request, boundary: bytes, *, max_body: int, max_part: int
) -> AsyncIterator[Part]:
    """Yield the parts of a multipart body as each one completes.

    Raises:
        HTTPException: 413 (the body or a part over its limit); 400 (no part with this boundary,
            a part without headers, or a body that ends before its closing boundary).
    """
    _declared_length(request, max_body, "intake.max_body_mb")
    delimiter = b"\r\n--" + boundary
    buf = bytearray(b"\r\n")  # so a delimiter at the very start is found like the others
    seen, scanned, started, closed, count = 0, 0, False, False, 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_body:
            raise too_large(max_body, "the request body", "intake.max_body_mb")
        if closed:
            continue  # the epilogue: ignored, as RFC 2046 says
        buf += chunk
        while True:
            at = buf.find(delimiter, max(0, scanned - len(delimiter)))
            if at < 0:
                scanned = len(buf)
                if len(buf) > max_part + _HEADERS_MAX:
                    raise too_large(max_part, f"part {count + 1}", "intake.max_instance_mb")
                break
            tail = buf[at + len(delimiter) : at + len(delimiter) + 2]
            if len(tail) < 2:
                scanned = at  # wait for the bytes after the delimiter
                break
            if started:
                count += 1
                yield _part(bytes(buf[:at]), count)
            started = True
            if tail == b"--":
                closed = True
                buf.clear()
                break
            del buf[: at + len(delimiter)]
            scanned = 0
    if not started:
        raise HTTPException(400, "no part is delimited by the boundary the Content-Type gives")
    if not closed:
        raise HTTPException(400, "the multipart body ends before its closing boundary")


def _part(raw: bytes, number: int) -> Part:
    """Split one part (after its delimiter line) into headers and content."""
    line_end = raw.find(b"\r\n")  # the rest of the delimiter line (transport padding)
    if line_end < 0 or raw[:line_end].strip(b" \t"):
        raise HTTPException(400, f"part {number}: the boundary line is malformed")
    head_end = raw.find(b"\r\n\r\n", line_end)
    if head_end < 0 and raw[line_end:].startswith(b"\r\n\r\n"):
        head_end = line_end
    if head_end < 0 or head_end > _HEADERS_MAX:
        raise HTTPException(400, f"part {number} has no header block")
    headers: dict[str, str] = {}
    for line in raw[line_end + 2 : head_end].split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise HTTPException(400, f"part {number} has a malformed header line")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return Part(headers, raw[head_end + 4 :])
