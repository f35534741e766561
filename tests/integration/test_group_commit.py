"""Group commit: requests that arrive together share a transaction, and each is answered only after
its own row is committed."""

from __future__ import annotations

import asyncio

from coldmail.db import database

BODY = {"recipient": "a@example.com", "subject": "s", "body": "b", "senderId": "s1",
        "scheduledAt": "2030-01-01T00:00:00Z"}


def transactions_that_inserted() -> int:
    with database.connection_context():
        return database.execute_sql("SELECT count(DISTINCT xmin::text) FROM emails").fetchone()[0]


async def test_a_burst_shares_transactions_and_every_answer_follows_its_commit(make_service, auth):
    # Given the API alone (no scheduler or worker writing)
    service = await make_service(worker=False, scheduler=False)
    client = service.client

    async def post_then_read(i: int) -> int:
        resp = await client.post("/emails", json=dict(BODY, subject=f"s{i}"), headers=auth)
        assert resp.status == 201
        job_id = (await resp.json())["jobId"]
        # the answer came after the commit: another connection sees the row at once
        with database.connection_context():
            assert database.execute_sql("SELECT subject FROM emails WHERE id = %s", (job_id,)).fetchone() == (f"s{i}",)
        return job_id

    # When 80 requests arrive at once
    ids = await asyncio.gather(*(post_then_read(i) for i in range(80)))
    # Then each got its own row, and far fewer transactions than requests stored them
    assert len(set(ids)) == 80
    groups = transactions_that_inserted()
    print(f"80 concurrent requests stored by {groups} transactions")
    assert groups < 40


async def test_a_reused_key_in_a_group_fails_alone(make_service, auth):
    service = await make_service(worker=False, scheduler=False)
    client = service.client
    first = await client.post("/emails", json=dict(BODY, idempotencyKey="taken"), headers=auth)
    assert first.status == 201
    bodies = [dict(BODY, subject=f"n{i}") for i in range(20)]
    bodies += [dict(BODY, idempotencyKey="taken", subject="other"), dict(BODY, idempotencyKey="taken")]
    bodies += [dict(BODY, idempotencyKey="fresh")] * 3
    responses = await asyncio.gather(*(client.post("/emails", json=b, headers=auth) for b in bodies))
    statuses = [r.status for r in responses]
    assert statuses[:20] == [201] * 20
    assert statuses[20:22] == [409, 200]
    assert sorted(statuses[22:]) == [200, 200, 201]
    fresh_ids = {(await r.json())["jobId"] for r in responses[22:]}
    assert len(fresh_ids) == 1
