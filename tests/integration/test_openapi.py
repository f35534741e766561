"""/openapi.json: valid OpenAPI 3, made from the request schemas, covering every route; the running
service keeps to it, checked on real responses and by a bounded schemathesis run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

from coldmail.api.schemas import ScheduleEmailSchema
from tests.conftest import API_KEY
from tests.support import payloads

#: the repository, for the schemathesis process to import the tests' hooks from
ROOT = Path(__file__).resolve().parents[2]

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/u/{token}"}  # /u/: the token is the credential
FAR = "2099-01-01T00:00:00Z"


def email(**overrides) -> dict:
    return payloads.email(**{"subject": "Hi", "scheduledAt": FAR, **overrides})


async def fetch_spec(client) -> dict:
    resp = await client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    return await resp.json()


class Conformance:
    """Sends requests through the test client and checks each response against the description."""

    def __init__(self, client, spec: dict) -> None:
        self.client = client
        self.openapi = OpenAPI.from_dict(spec)
        self.seen: set[tuple[str, str, int]] = set()

    async def call(self, method: str, path: str, *, json_body=None, data: str | None = None,
                   headers: dict | None = None, auth: bool = True, status: int) -> dict | str:
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = f"Bearer {API_KEY}"
        if json_body is not None:
            data = json.dumps(json_body)
            headers.setdefault("Content-Type", "application/json")
        resp = await self.client.request(method, path, data=data, headers=headers)
        body = await resp.read()
        assert resp.status == status, f"{method} {path}: {resp.status} {body[:500]!r}"
        url_path, _, query = path.partition("?")
        request = MockRequest("http://localhost", method, url_path,
                              args=dict(p.split("=", 1) for p in query.split("&") if p),
                              headers=headers, data=(data or "").encode(),
                              content_type=headers.get("Content-Type", "application/json"))
        response = MockResponse(body, status_code=resp.status, headers=dict(resp.headers),
                                content_type=resp.headers.get("Content-Type", ""))
        self.openapi.validate_response(request, response)  # raises, naming what does not conform
        self.seen.add((method, url_path, resp.status))
        return json.loads(body) if resp.content_type == "application/json" else body.decode()


async def test_the_description_is_valid_openapi_and_covers_every_route(client):
    # Given the description the service serves, without a key
    spec = await fetch_spec(client)
    # Then it is valid OpenAPI 3 with the bearer scheme
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"]
        ["description"]}
    assert spec["security"] == [{"bearerAuth": []}]
    # And every route the app serves is described, with the same methods (path parameters by position)
    served = {(r.method.lower(), re.sub(r"{[^}]+}", "{}", r.resource.canonical))
              for r in client.app.router.routes() if r.method not in ("HEAD", "*")}
    described = {(method, re.sub(r"{[^}]+}", "{}", path))
                 for path, item in spec["paths"].items() for method in item if method != "parameters"}
    assert served == described, f"served only: {served - described}; described only: {described - served}"
    # And each operation needs the key unless public, and describes its errors with the error shape
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path in PUBLIC:
                assert operation["security"] == [], path
                continue
            assert "security" not in operation and "401" in operation["responses"], (method, path)
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    ref = response.get("$ref") or response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith(("/Error", *(f"/{n}" for n in (
                        "BadRequest", "Unauthorized", "NotFound", "Conflict", "PayloadTooLarge",
                        "UnsupportedMediaType", "Unavailable")))), (method, path, code)


async def test_the_request_schemas_are_the_validating_ones(client):
    # Given the description and the schema that validates POST /emails
    spec = await fetch_spec(client)
    described = spec["components"]["schemas"]["ScheduleEmail"]
    fields = ScheduleEmailSchema().fields
    # Then it lists the same fields, required ones and patterns, and refuses unknown fields like the server
    assert set(described["properties"]) == set(fields)
    assert set(described["required"]) == {name for name, f in fields.items() if f.required}
    assert described["additionalProperties"] is False
    assert described["properties"]["senderId"]["pattern"] == fields["senderId"].validators[0].regex.pattern
    assert spec["components"]["schemas"]["ScheduleBatch"]["properties"]["emails"]["maxItems"] == 1000


async def test_real_responses_match_the_description(client, sink):
    # Given a client that checks every response against the description
    api = Conformance(client, await fetch_spec(client))
    # When each endpoint is called with good and bad input, Then every answer conforms
    created = await api.call("POST", "/emails", json_body=email(idempotencyKey="k1"), status=201)
    job = created["jobId"]
    await api.call("POST", "/emails", json_body=email(idempotencyKey="k1"), status=200)
    await api.call("POST", "/emails", json_body=email(idempotencyKey="k1", subject="other"), status=409)
    await api.call("POST", "/schedule-email", json_body=email(), headers={"Idempotency-Key": "k2"}, status=201)
    await api.call("POST", "/emails", json_body=email(recipient="nope", extra=1), status=400)
    await api.call("POST", "/emails", json_body=email(), headers={"Idempotency-Key": "bad key"}, status=400)
    await api.call("POST", "/emails", data="{", headers={"Content-Type": "application/json"}, status=400)
    await api.call("POST", "/emails", data="x", headers={"Content-Type": "text/plain"}, status=415)
    await api.call("POST", "/emails", json_body=email(body="x" * (1024 * 1024 + 10)), status=413)
    await api.call("POST", "/emails", json_body=email(), auth=False, status=401)

    batch = await api.call("POST", "/emails/batch", json_body={"emails": [email(), email(subject="now",
                                                                 scheduledAt=None)]}, status=201)
    await api.call("POST", "/emails/batch", json_body={"emails": [email(), email(senderId="")]}, status=400)
    await api.call("POST", "/emails/batch", json_body={"emails": [email(idempotencyKey="k1", body="x")]},
                   status=409)

    await api.call("GET", f"/emails/{job}", status=200)
    await api.call("GET", "/emails/987654321", status=404)
    await api.call("GET", f"/emails/{job}/events", status=200)
    await api.call("GET", "/emails/987654321/events", status=404)
    page = await api.call("GET", "/emails?limit=2", status=200)
    await api.call("GET", f"/emails?limit=2&after={page['next']}&status=PENDING&senderId=s1", status=200)
    await api.call("GET", "/emails?limit=9999", status=400)

    await api.call("PATCH", f"/emails/{job}", json_body={"scheduledAt": "2098-01-01T00:00:00+02:00"}, status=200)
    await api.call("PATCH", f"/emails/{job}", json_body={"when": "later"}, status=400)
    await api.call("PATCH", "/emails/987654321", json_body={"scheduledAt": FAR}, status=404)
    await api.call("PATCH", f"/emails/{job}", data="x", headers={"Content-Type": "text/plain"}, status=415)
    await api.call("POST", f"/emails/{job}/cancel", status=200)
    await api.call("POST", f"/emails/{job}/cancel", status=409)
    await api.call("PATCH", f"/emails/{job}", json_body={"scheduledAt": FAR}, status=409)
    await api.call("POST", "/emails/987654321/cancel", status=404)

    # And a sent email's answer (sentAt, messageId filled in) conforms too
    sent_id = batch["jobIds"][1]
    for _ in range(100):
        if sink.arrivals:
            break
        await asyncio.sleep(0.05)
    sent = await api.call("GET", f"/emails/{sent_id}", status=200)
    assert sent["status"] == "SENT" and sent["messageId"]
    await api.call("GET", f"/emails/{sent_id}/events", status=200)

    await api.call("GET", "/healthz", auth=False, status=200)
    await api.call("GET", "/readyz", auth=False, status=200)
    metrics = await api.call("GET", "/metrics", auth=False, status=200)
    assert "coldmail_emails_accepted_total" in metrics
    await api.call("GET", "/openapi.json", auth=False, status=200)
    # (every operation of the description was exercised)
    assert {path for _, path, _ in api.seen} >= {"/emails", "/schedule-email", "/emails/batch", "/healthz",
                                                 "/readyz", "/metrics", "/openapi.json"}


async def test_an_unready_service_answers_as_described(make_service):
    # Given a service whose Redis does not answer
    from tests.support.net import free_port

    service = await make_service(worker=False, scheduler=False, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    api = Conformance(service.client, await fetch_spec(service.client))
    # Then /readyz is 503 naming Redis, in the described shape
    body = await api.call("GET", "/readyz", auth=False, status=503)
    assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"].startswith("error")


@pytest.mark.timeout(180)
async def test_schemathesis_finds_no_server_error_and_no_response_off_the_description(make_service, tmp_path):
    # Given the running API and its own description. No worker: schemathesis makes senders with relays
    # of its own invention (smtp://smtp.example.com), and nothing may connect to those from here.
    service = await make_service(worker=False, scheduler=False)
    base = str(service.client.make_url("")).rstrip("/")
    st = Path(sys.executable).with_name("st")
    # When schemathesis generates requests from the description (valid and invalid ones, and chains
    # along the links: schedule, then get, cancel, move), a bounded, reproducible run.
    # positive_data_acceptance is left out: some rules cannot be said in JSON Schema (email-validator's
    # view of an address, the Idempotency-Key header agreeing with the field), so the server rightly
    # refuses a few inputs that the description alone would allow.
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", f"{base}/openapi.json", "--header", f"Authorization: Bearer {API_KEY}",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "8", "--seed", "20261128", "--generation-database", "none",
        "--request-timeout", "10", "--no-color", "--report", "junit", "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        # POST /inbound's raw messages need a serializer of their own
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
             "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))})
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=150)
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    print(text[-3000:])
    # Then it found nothing: no 5xx, no status, header, content type or body the description does not allow
    assert proc.returncode == 0, text[-8000:]
    summary = re.findall(r"^ +(\d+) generated, (\d+) passed", text, re.MULTILINE)
    assert summary, f"no summary in {tmp_path / 'schemathesis.txt'}"
    generated, passed = map(int, summary[-1])
    assert generated == passed > 100, f"see {tmp_path / 'schemathesis.txt'}"
