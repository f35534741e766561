"""What `python3 run.py api` answers a stranger, as a real process: the server options it is started with
(bodies handed over as sent, decoded by the app) and the headers it sets."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.conftest import API_KEY
from tests.support.payloads import email
from tests.support.processes import start_run_py, wait_healthy

pytestmark = pytest.mark.e2e


def post(base_url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, dict]:
    req = urllib.request.Request(base_url + "/emails", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def raw_status(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_api_process_decodes_bodies_itself_and_names_no_versions(base_env, port, http):
    proc = start_run_py(dict(base_env, PORT=str(port)), "api")
    try:
        wait_healthy(http.base_url, proc)
        # A gzip body is taken; one that does not decode, or comes in br, is a JSON 4xx
        status, headers, body = post(http.base_url, gzip.compress(json.dumps(email("zipped")).encode()),
                                     {"Content-Encoding": "gzip"})
        assert status == 201, body
        assert headers["Server"] == "coldmail"
        status, _, body = post(http.base_url, b"not gzip", {"Content-Encoding": "gzip"})
        assert (status, body["error"]) == (400, "bad_content_encoding")
        status, headers, body = post(http.base_url, b"\x00 not brotli", {"Content-Encoding": "br"})
        assert (status, body["error"], headers["Accept-Encoding"]) == (415, "unsupported_media_type", "gzip, deflate")
        # A non-ASCII key is 401, not 500
        status, body = raw_status(port, b"GET /emails HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                        b"Authorization: Bearer \xe9t\xe9\r\n\r\n")
        assert (status, json.loads(body)["error"]) == (401, "unauthorized")
        # And no answer names Python or aiohttp
        with urllib.request.urlopen(http.base_url + "/healthz", timeout=5) as resp:
            assert resp.headers["Server"] == "coldmail"
    finally:
        proc.terminate()
