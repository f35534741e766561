"""A request's JSON body: reading it, decoding its Content-Encoding, and how large and deep it may be. Every
route that takes a body reads it here.

The server hands bodies over as they were sent (SERVER_OPTIONS: aiohttp's own decoding answers a `br` or
`zstd` body with a plain-text 400 naming the library it lacks, before the app sees the request), so the
size limit applies to the decoded bytes as they come out of zlib, and a body that does not decode is a
400 like any other bad input.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from aiohttp import web

from ..errors import (BadContentEncoding, BadRequest, InvalidJson, PayloadTooLarge, UnsupportedContentEncoding,
                      UnsupportedMediaType)

#: what any route takes
MAX_BODY_BYTES = 1024 * 1024
#: what POST /emails/batch takes: a batch of 1000 emails with HTML bodies does not fit in 1 MiB
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: arrays and objects inside one another, at most: the deepest body the API takes has 3 levels
MAX_DEPTH = 32
#: what the aiohttp server running the app must be given (coldmail.serve, and the tests' server)
SERVER_OPTIONS = {"auto_decompress": False}
#: Content-Encodings taken, and the zlib window bits that decode each
ACCEPTED_ENCODINGS = "gzip, deflate"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {max_bytes // 2**20} MiB")


#: what POST /inbound takes: a DSN or a reply returns the message it is about, attachments and all
MAX_INBOUND_BYTES = 10 * 1024 * 1024


async def read_json(request: web.Request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object; 415 if it is not sent as JSON (or in an encoding not taken), 413 past
    `max_bytes` (sent or decoded), 400 if it does not decode, is not JSON, is nested too deep or is not an
    object."""
    raw = await read_bytes(request, content_type="application/json", max_bytes=max_bytes)
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


async def read_bytes(request: web.Request, *, content_type: str, max_bytes: int) -> bytes:
    """The body as bytes, for a route that takes one `content_type` (JSON too: read_json): 415 for another type (or
    an encoding not taken), 413 past `max_bytes` (sent or decoded), 400 if it does not decode."""
    if request.content_type != content_type:
        raise UnsupportedMediaType(f"send the body as Content-Type: {content_type}")
    encoding = _content_encoding(request)
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(max_bytes)
    raw = bytearray()
    while chunk := await request.content.readany():
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large(max_bytes)
    return decode(bytes(raw), encoding, max_bytes=max_bytes) if encoding else bytes(raw)


def _content_encoding(request: web.Request) -> str | None:
    codings = [c.strip().lower() for c in request.headers.get("Content-Encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _WBITS:
        raise UnsupportedContentEncoding(f"send the body uncompressed or in one of these Content-Encodings: "
                                         f"{ACCEPTED_ENCODINGS}")
    return codings[0]


def decode(raw: bytes, encoding: str, *, max_bytes: int) -> bytes:
    """`raw` decoded from gzip or deflate, never holding more than `max_bytes` + 1 decoded bytes."""
    wbits = _WBITS[encoding]
    if encoding == "deflate" and raw[:1] and raw[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate without the zlib header, as some clients send it
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, max_bytes + 1)
        if len(out) > max_bytes or decoder.unconsumed_tail:
            raise too_large(max_bytes)
        out += decoder.flush()
    except zlib.error:
        raise BadContentEncoding(f"the body does not decode as {encoding}") from None
    if not decoder.eof or decoder.unused_data:
        raise BadContentEncoding(f"the body does not decode as {encoding}: it is cut short or has bytes after "
                                 "its end")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def parse_json(raw: bytes | bytearray) -> Any:
    """The JSON value of `raw`; errors say where the text is wrong, never in the parser's own words."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)  # NaN and Infinity are not JSON
    except json.JSONDecodeError as e:
        raise InvalidJson(f"the body is not valid JSON (line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise InvalidJson("the body is not valid JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise InvalidJson(f"the body is nested too deep: at most {MAX_DEPTH} levels of arrays and objects") from None
    except ValueError:  # NaN, Infinity, a number of more than 4300 digits
        raise InvalidJson("the body is not valid JSON: a number is not a JSON number or is too long") from None
    if _depth_exceeds(data, MAX_DEPTH):
        raise InvalidJson(f"the body is nested too deep: at most {MAX_DEPTH} levels of arrays and objects")
    return data


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep (without recursion: the value may be deep)."""
    level = [value]
    for _ in range(limit):
        level = [child for v in level if isinstance(v, (dict, list))
                 for child in (v.values() if isinstance(v, dict) else v)]
        if not level:
            return False
    return any(isinstance(v, (dict, list)) for v in level)
