"""Helpers for tests that run coldmail as real processes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import API_KEY


class Http:
    """A tiny blocking JSON client, like curl in a user's shell."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, path: str, body: dict | None = None, *, key: str | None = API_KEY):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post(self, path: str, body: dict, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)


@pytest.fixture
def http(port):
    return Http(f"http://127.0.0.1:{port}")
