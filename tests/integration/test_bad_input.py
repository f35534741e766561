"""Input that used to make the API answer 500, and what an answer may tell a stranger.

Each request goes over a real socket to the app the service runs (aiohttp's
test server), some as raw bytes: a client library would refuse to send them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import pytest

from tests.support.payloads import email

JSON = {"Content-Type": "application/json"}


async def raw_request(client, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send `head` (request line and headers, without the blank line) and `body` as they are; return the
    status, the headers (lower-cased names) and the body of the answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, payload


def error_body(payload: bytes, code: str) -> dict:
    body = json.loads(payload)
    assert body["error"] == code and body["message"], body
    return body


def assert_no_internals(text: str) -> None:
    """No Python exception names, codec messages, file paths or tracebacks in what the API says."""
    for leak in ("Traceback", "Error:", "Exception", ".py", "codec", "Expecting", "char ", "/tmp", "/work",
                 "/home", "recursion", "python", "aiohttp"):
        assert leak.lower() not in text.lower(), f"{leak!r} in {text!r}"


# -- Authorization ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["Bearer clé".encode(), "Bearer \xe9t\xe9".encode("latin-1"), b"Bearer \xff\xfe",
                                   "Bе\u0430rer key".encode()])
async def test_a_non_ascii_authorization_header_is_401(client, value):
    status, headers, payload = await raw_request(
        client, b"POST /emails HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: " + value,
        json.dumps(email("x")).encode())
    assert status == 401, payload
    assert headers["www-authenticate"].startswith("Bearer")
    assert_no_internals(error_body(payload, "unauthorized")["message"])


async def test_a_non_ascii_key_is_401_on_every_route_that_needs_one(client):
    for method, path in (("GET", "/emails"), ("GET", "/emails/1"), ("GET", "/senders/s1"),
                         ("POST", "/emails/1/cancel")):
        status, _, payload = await raw_request(
            client, f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode() + "ключ".encode())
        assert status == 401, (path, payload)
        error_body(payload, "unauthorized")


# -- Content-Encoding -------------------------------------------------------------------------

def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no time in the header: xdist workers must collect the same ids


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


@pytest.mark.parametrize("encoding,body", [
    ("gzip", b"this is not gzip at all"),
    ("gzip", _gzip(b'{"recipient": "a@example.com"}')[:-12]),  # cut short
    ("gzip", _gzip(b"{}") + b"trailing bytes"),
    ("gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 40),
    ("x-gzip", b""),
    ("deflate", b"not deflate either"),
    ("deflate", _deflate(b"{}")[:-3]),
])
async def test_a_body_whose_content_encoding_does_not_decode_is_400(client, auth, encoding, body):
    status, _, payload = await raw_request(
        client, b"POST /emails HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: " + auth["Authorization"].encode() + b"\r\nContent-Encoding: " + encoding.encode(),
        body)
    assert status == 400, payload
    answer = error_body(payload, "bad_content_encoding")
    assert encoding.removeprefix("x-") in answer["message"]
    assert_no_internals(answer["message"])


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-unknown", "gzip, gzip", "gzip, br"])
async def test_a_content_encoding_not_taken_is_415_naming_those_taken(client, auth, encoding):
    status, headers, payload = await raw_request(
        client, b"POST /emails HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: " + auth["Authorization"].encode() + b"\r\nContent-Encoding: " + encoding.encode(),
        b"\x00\x01\x02 not in any encoding taken")
    assert status == 415, payload
    assert headers["accept-encoding"] == "gzip, deflate"
    answer = error_body(payload, "unsupported_media_type")
    assert "gzip" in answer["message"]
    assert_no_internals(answer["message"])


async def test_a_body_that_decodes_past_the_limit_is_413_however_small_it_was_sent(client, auth):
    bomb = _gzip(json.dumps(email("bomb", body="x" * (2 * 1024 * 1024))).encode())
    assert len(bomb) < 10_000
    resp = await client.post("/emails", data=bomb, headers={**auth, **JSON, "Content-Encoding": "gzip"})
    assert resp.status == 413, await resp.text()
    assert (await resp.json())["error"] == "payload_too_large"


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", _gzip), ("x-gzip", _gzip), ("GZIP", _gzip), ("deflate", _deflate), ("identity", bytes),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, without the zlib header
])
async def test_a_body_that_decodes_is_taken(client, auth, encoding, compress):
    resp = await client.post("/emails", data=compress(json.dumps(email("zipped")).encode()),
                             headers={**auth, **JSON, "Content-Encoding": encoding})
    assert resp.status == 201, await resp.text()
    job_id = (await resp.json())["jobId"]
    shown = await (await client.get(f"/emails/{job_id}", headers=auth)).json()
    assert shown["subject"] == "zipped"


# -- JSON -------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [32, 40, 900, 5000, 100_000])
async def test_json_nested_too_deep_is_400(client, auth, depth):
    for opening, closing in (("[", "]"), ('{"a":', "}")):
        nested = opening * depth + "1" + closing * depth
        body = json.dumps(email("deep"))[:-1] + ', "subject": ' + nested + "}"
        resp = await client.post("/emails", data=body, headers={**auth, **JSON})
        assert resp.status == 400, await resp.text()
        answer = await resp.json()
        assert answer["error"] == "invalid_json" and "deep" in answer["message"], answer
        assert_no_internals(answer["message"])


async def test_json_nested_as_deep_as_allowed_is_validated_as_usual(client, auth):
    # the body's object and 31 arrays: 32 levels
    resp = await client.post("/emails", json={**email("nested"), "subject": json.loads("[" * 31 + "]" * 31)},
                             headers=auth)
    assert resp.status == 400
    assert "subject" in (await resp.json())["fields"]


@pytest.mark.parametrize("body", [
    b"{not json", b'{"a": 1,}', b"\xff\xfe\x00", b'{"a": "\xff"}', b"{" + b'"a": ' * 3 + b"}",
    b'{"n": ' + b"9" * 5000 + b"}", b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": "unterminated', b"",
])
async def test_json_parser_errors_name_the_place_not_python(client, auth, body):
    resp = await client.post("/emails", data=body, headers={**auth, **JSON})
    assert resp.status == 400, await resp.text()
    answer = await resp.json()
    assert answer["error"] == "invalid_json", answer
    assert_no_internals(answer["message"])


# -- what any answer shows --------------------------------------------------------------------

@pytest.mark.parametrize("path,key", [("/healthz", False), ("/openapi.json", False), ("/emails", True),
                                      ("/nope", True), ("/emails", False)])
async def test_no_answer_names_the_server_software(client, auth, path, key):
    resp = await client.get(path, headers=auth if key else {})
    server = resp.headers.get("Server", "")
    assert "python" not in server.lower() and "aiohttp" not in server.lower(), server
    assert not any(ch.isdigit() for ch in server), server


async def test_readiness_says_which_backend_is_down_but_not_what_python_raised(make_service):
    from tests.support.net import free_port

    service = await make_service(worker=False, scheduler=False, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    resp = await service.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"] == {"postgres": "ok", "redis": "error"}
