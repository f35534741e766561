"""Emails go into PostgreSQL exactly as they were accepted, whatever their text, by both ways of storing them
(a batch request on the executor, schedule requests through the group commit's asynchronous connection)."""

from __future__ import annotations

import asyncio
import re

from coldmail.db import database
from coldmail.db.emails import intake
from coldmail.db.emails.reads import get_email
from coldmail.db.models import Email

TRICKY = ['quote " and backslash \\ and \\" both', "braces {a,b} and commas, NULL", "NULL", "", "  spaces  ",
          "é ü 😀 ümlaut", "tab\there", 'ends with \\', '"', "line\nbreak"]


def email(i: int, text: str, **extra) -> dict:
    one_line = text.replace("\n", " ")
    return {"recipient": f"user{i}@example.com", "subject": one_line, "body": text, "senderId": "s1", **extra}


def stored(job_id: int) -> dict:
    with database.connection_context():
        return get_email("default", job_id)


async def test_a_batch_stores_every_text_exactly(make_service, auth):
    service = await make_service(worker=False, scheduler=False)
    bodies = [email(i, text) for i, text in enumerate(TRICKY)]
    bodies.append(email(99, "keyed", idempotencyKey='k"\\1', scheduledAt="2030-01-01T00:00:00+02:00"))
    resp = await service.client.post("/emails/batch", json={"emails": bodies}, headers=auth)
    assert resp.status == 201
    ids = (await resp.json())["jobIds"]
    for job_id, body in zip(ids, bodies):
        row = stored(job_id)
        assert (row["subject"], row["body"], row["recipient"]) == (body["subject"], body["body"], body["recipient"])
    assert stored(ids[-1])["idempotency_key"] == 'k"\\1'
    assert stored(ids[-1])["scheduled_at"].isoformat() == "2029-12-31T22:00:00+00:00"


async def test_grouped_requests_store_every_text_exactly(make_service, auth):
    service = await make_service(worker=False, scheduler=False)
    bodies = [email(i, text, idempotencyKey=f"g{i}" if i % 2 else None) for i, text in enumerate(TRICKY)]
    bodies = [{k: v for k, v in b.items() if v is not None} for b in bodies]
    responses = await asyncio.gather(*(service.client.post("/emails", json=b, headers=auth) for b in bodies))
    for resp, body in zip(responses, bodies):
        assert resp.status == 201
        row = stored((await resp.json())["jobId"])
        assert (row["subject"], row["body"], row["idempotency_key"]) == (
            body["subject"], body["body"], body.get("idempotencyKey"))


def test_the_model_has_every_column_and_the_insert_fills_every_required_one(database_url):
    # Given the emails table as the migrations made it
    with database.connection_context():
        table = database.execute_sql(
            "SELECT column_name, is_nullable = 'NO' AND column_default IS NULL FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'emails' ORDER BY ordinal_position").fetchall()
    # Then the model, and so every column list built from it, has each column in the table's order
    assert [name for name, _ in table] == [f.column_name for f in Email._meta.sorted_fields]
    # And the INSERT of new emails gives a value to each column that has no default and may not be NULL
    inserted = re.search(r"INSERT INTO emails \(([^)]*)\)", intake.PREPARE_INSERT_BATCH).group(1).split(", ")
    assert {name for name, required in table if required} <= set(inserted)
