"""A tiny blocking JSON client for coldmail running as a real process, like curl in a user's shell."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from tests.conftest import API_KEY
from tests.support.payloads import email


class Http:
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


def schedule(http: Http, subjects: list[str], *, at: datetime | None = None, every_s: float = 0.0) -> list[int]:
    """POST /emails/batch: one email per subject, due now or from `at` on, `every_s` apart in order."""
    emails = []
    for i, subject in enumerate(subjects):
        emails.append(email(subject) if at is None else
                      email(subject, scheduledAt=(at + timedelta(seconds=i * every_s)).isoformat()))
    ids = []
    for first in range(0, len(emails), 1000):
        status, answer = http.post("/emails/batch", {"emails": emails[first:first + 1000]})
        assert status == 201, answer
        ids.extend(answer["jobIds"])
    return ids
