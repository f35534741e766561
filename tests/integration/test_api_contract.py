"""The schedule endpoint's contract: every kind of bad input gets a clear 4xx JSON error."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from coldmail.db import database
from coldmail.db.apikeys import create_api_key

VALID = {"recipient": "user@example.com", "subject": "Welcome!", "body": "<h1>Hello</h1>",
         "senderId": "sender_123", "scheduledAt": "2030-10-27T10:00:00Z"}


def payload(**changes) -> dict:
    body = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


async def assert_error(resp, status: int, error: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] == error
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.parametrize("path", ["/schedule-email", "/emails"])
async def test_schedule_returns_201_with_the_contract_body(client, auth, path):
    resp = await client.post(path, json=VALID, headers=auth)
    assert resp.status == 201
    body = await resp.json()
    assert body == {"message": "Email scheduled", "jobId": body["jobId"], "status": "PENDING",
                    "scheduledAt": "2030-10-27T10:00:00.000Z"}
    row = await (await client.get(f"/emails/{body['jobId']}", headers=auth)).json()
    assert set(row) == {"id", "recipient", "subject", "senderId", "status", "scheduledAt", "nextAttemptAt",
                        "sentAt", "attempts", "lastError", "messageId", "createdAt", "updatedAt",
                        "unsubscribe", "sequence", "stopOnReply", "inReplyTo", "repliedAt",
                        "recipientTimeZone"}
    # the contract: the email also shows the fields it was scheduled with
    assert row["recipient"] == "user@example.com" and row["senderId"] == "sender_123"
    assert row["status"] == "PENDING" and row["attempts"] == 0 and row["sentAt"] is None


async def test_offset_is_kept_as_the_same_instant(client, auth):
    resp = await client.post("/emails", json=payload(scheduledAt="2030-10-27T12:00:00+02:00"), headers=auth)
    assert (await resp.json())["scheduledAt"] == "2030-10-27T10:00:00.000Z"


@pytest.mark.parametrize("scheduled_at", [..., "2001-01-01T00:00:00Z"])
async def test_missing_or_past_time_means_now(client, auth, scheduled_at):
    before = datetime.now(timezone.utc)
    resp = await client.post("/emails", json=payload(scheduledAt=scheduled_at), headers=auth)
    assert resp.status == 201
    at = datetime.fromisoformat((await resp.json())["scheduledAt"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= at <= datetime.now(timezone.utc) + timedelta(seconds=1)


# -- authentication ----------------------------------------------------------

async def test_no_key_wrong_key_and_wrong_scheme_are_401(client):
    for headers in ({}, {"Authorization": "Bearer not-a-key-at-all"}, {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer "}):
        resp = await client.post("/emails", json=VALID, headers=headers)
        await assert_error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_key_made_with_create_api_key_works_and_is_stored_hashed(client):
    with database.connection_context():
        key = create_api_key("ci", account="default")
        stored = [row[0] for row in database.execute_sql("SELECT key_hash FROM api_keys")]
    assert key not in stored and len(stored) == 1
    resp = await client.post("/emails", json=VALID, headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 201


async def test_health_needs_no_key_and_readiness_reports_each_backend(client):
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"postgres": "ok", "redis": "ok"}


# -- validation --------------------------------------------------------------

@pytest.mark.parametrize("field", ["recipient", "subject", "body", "senderId"])
async def test_each_missing_field_is_named(client, auth, field):
    body = await assert_error(await client.post("/emails", json=payload(**{field: ...}), headers=auth),
                              400, "validation_error")
    assert field in body["fields"]


@pytest.mark.parametrize("field,value", [
    ("recipient", "not-an-address"),
    ("recipient", "user@"),
    ("recipient", "a b@example.com"),
    ("recipient", "user@example.com\r\nBcc: victim@example.com"),
    ("recipient", 42),
    ("recipient", None),
    ("subject", "Hi\r\nBcc: victim@example.com"),
    ("subject", "Hi\nthere"),
    ("subject", ["a list"]),
    ("subject", "x" * 999),
    ("body", {"html": "x"}),
    ("senderId", ""),
    ("senderId", "has space"),
    ("senderId", "x" * 200),
    ("scheduledAt", "2030-10-27T10:00:00"),
    ("scheduledAt", "tomorrow"),
    ("scheduledAt", "2030-13-45T10:00:00Z"),
    ("scheduledAt", 1700000000),
    ("idempotencyKey", ""),
    ("idempotencyKey", "x" * 300),
    ("idempotencyKey", "has\nnewline"),
    ("unexpected", "field"),
])
async def test_bad_field_is_400_naming_it(client, auth, field, value):
    resp = await client.post("/emails", json=payload(**{field: value}), headers=auth)
    body = await assert_error(resp, 400, "validation_error")
    assert field in body["fields"], body


async def test_time_without_offset_says_why(client, auth):
    resp = await client.post("/emails", json=payload(scheduledAt="2030-10-27T10:00:00"), headers=auth)
    body = await assert_error(resp, 400, "validation_error")
    assert "aware" in str(body["fields"]["scheduledAt"]).lower() or "offset" in str(body["fields"]).lower()


async def test_not_json_is_415_and_broken_json_is_400(client, auth):
    resp = await client.post("/emails", data="recipient=a@b.c", headers={**auth, "Content-Type": "text/plain"})
    await assert_error(resp, 415, "unsupported_media_type")
    resp = await client.post("/emails", data="{not json", headers={**auth, "Content-Type": "application/json"})
    await assert_error(resp, 400, "invalid_json")
    resp = await client.post("/emails", data=b"\xff\xfe", headers={**auth, "Content-Type": "application/json"})
    await assert_error(resp, 400, "invalid_json")
    for not_object in ("[]", "null", "42", '"text"'):
        resp = await client.post("/emails", data=not_object, headers={**auth, "Content-Type": "application/json"})
        await assert_error(resp, 400, "bad_request")


async def test_body_over_one_mib_is_413(client, auth):
    resp = await client.post("/emails", json=payload(body="x" * (1024 * 1024 + 1)), headers=auth)
    await assert_error(resp, 413, "payload_too_large")


async def test_unknown_routes_and_methods_are_json(client, auth):
    await assert_error(await client.get("/nope", headers=auth), 404, "not_found")
    await assert_error(await client.get("/emails/abc", headers=auth), 404, "not_found")
    await assert_error(await client.get("/emails/999999", headers=auth), 404, "not_found")
    await assert_error(await client.get("/emails/99999999999999999999999", headers=auth), 404, "not_found")
    resp = await client.delete("/schedule-email", headers=auth)
    await assert_error(resp, 405, "method_not_allowed")


# -- idempotency -------------------------------------------------------------

async def test_same_key_same_payload_is_200_with_the_same_id(client, auth):
    first = await client.post("/emails", json=payload(idempotencyKey="k-1"), headers=auth)
    again = await client.post("/emails", json=payload(idempotencyKey="k-1"), headers=auth)
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["jobId"] == (await again.json())["jobId"]


async def test_same_key_other_payload_is_409(client, auth):
    await client.post("/emails", json=payload(idempotencyKey="k-2"), headers=auth)
    resp = await client.post("/emails", json=payload(idempotencyKey="k-2", subject="Other"), headers=auth)
    await assert_error(resp, 409, "conflict")


async def test_key_in_header_works_like_the_field(client, auth):
    headers = {**auth, "Idempotency-Key": "k-3"}
    first = await client.post("/emails", json=VALID, headers=headers)
    again = await client.post("/emails", json=payload(idempotencyKey="k-3"), headers=auth)
    assert (first.status, again.status) == (201, 200)
    clash = await client.post("/emails", json=payload(idempotencyKey="other"), headers=headers)
    await assert_error(clash, 400, "bad_request")


async def test_concurrent_identical_requests_make_one_row_and_one_send(client, auth, sink):
    # Given 20 identical requests with one key, due now, sent at once
    body = payload(idempotencyKey="race-1", scheduledAt=...)
    responses = await asyncio.gather(*(client.post("/emails", json=body, headers=auth) for _ in range(20)))
    # Then exactly one created it, the others got its id
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 19 + [201]
    ids = {(await r.json())["jobId"] for r in responses}
    assert len(ids) == 1
    with database.connection_context():
        assert database.execute_sql("SELECT count(*) FROM emails").fetchone()[0] == 1
    # And it is sent once
    for _ in range(100):
        if sink.arrivals:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert len(sink.arrivals) == 1
