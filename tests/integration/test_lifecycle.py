"""The lifecycle endpoints against the running service: batch, cancel, reschedule, listing.

The races run the real thing: an embedded Dramatiq worker on Redis claims
emails at their due time while the test cancels or moves them over HTTP.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta

import pytest

from coldmail.db import database
from coldmail.db.emails.reads import LIVE_COUNT, page_query
from tests.support.waiting import async_wait_for
from tests.support.clock import at, iso
from tests.support.db import sql
from tests.support.payloads import email


def far(**overrides) -> dict:
    """An email due years ahead: it stays PENDING for the whole test."""
    return email(**{"scheduledAt": "2099-01-01T00:00:00Z", **overrides})


def count_emails() -> int:
    return sql("SELECT count(*) FROM emails")[0][0]


async def error(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"] == code and body["message"], body
    return body


async def settle(sink, expected: int, *, timeout_s: float = 10) -> None:
    """Wait for `expected` arrivals, then a little longer so that a duplicate would show."""
    await async_wait_for(lambda: len(sink.arrivals) >= expected, timeout_s=timeout_s, what=f"{expected} arrivals")
    await asyncio.sleep(0.5)


def arrivals_by_id(sink) -> dict[int, list[float]]:
    """Arrival times per email id, from the Message-ID (<id.…@…>) the worker stamps."""
    out: dict[int, list[float]] = {}
    for arrival in sink.arrivals:
        email_id = int(arrival.message["Message-ID"].strip("<").split(".", 1)[0])
        out.setdefault(email_id, []).append(arrival.at)
    return out


# -- batch -------------------------------------------------------------------------

async def test_batch_stores_every_email_in_order_and_sends_the_due_ones(client, auth, sink):
    # Given a batch of two emails due in a second and one due tomorrow
    due = at(1)
    batch = {"emails": [email("b-0", scheduledAt=iso(due)), far(subject="b-1"),
                        email("b-2", scheduledAt=iso(due), senderId="batch_sender")]}
    # When it is posted
    resp = await client.post("/emails/batch", json=batch, headers=auth)
    # Then it answers 201 with an id per email, in order
    assert resp.status == 201, await resp.text()
    ids = (await resp.json())["jobIds"]
    assert len(ids) == 3 and len(set(ids)) == 3
    for job_id, subject in zip(ids, ("b-0", "b-1", "b-2")):
        assert (await (await client.get(f"/emails/{job_id}", headers=auth)).json())["subject"] == subject
    # And the two due ones arrive at their time, once; the far one is neither sent nor handed over
    await settle(sink, 2)
    assert sorted(sink.subjects()) == ["b-0", "b-2"]
    assert min(a.at for a in sink.arrivals) >= due.timestamp() - 0.005
    assert sql("SELECT status, queued_at FROM emails WHERE id = %s", ids[1]) == [("PENDING", None)]
    # And the new sender exists with the defaults, and each email has its created event
    assert sql("SELECT count(*) FROM senders WHERE id = 'batch_sender'") == [(1,)]
    kinds = [e["kind"] for e in (await (await client.get(f"/emails/{ids[1]}/events", headers=auth)).json())["events"]]
    assert kinds == ["created"]


async def test_a_batch_of_1000_is_stored_by_one_statement(client, auth, monkeypatch):
    # Given 1000 emails, each with its own key, and a record of the statements sent to PostgreSQL
    batch = {"emails": [far(recipient=f"u{i}@example.com", idempotencyKey=f"bulk-{i}") for i in range(1000)]}
    pool = type(database.obj)
    execute_sql = pool.execute_sql
    inserts: list[str] = []

    def recording(self, sql, *args, **kwargs):
        if "INSERT INTO emails" in sql:
            inserts.append(sql)
        return execute_sql(self, sql, *args, **kwargs)

    monkeypatch.setattr(pool, "execute_sql", recording)
    # When they are posted as one batch
    resp = await client.post("/emails/batch", json=batch, headers=auth)
    # Then all are stored, in order
    assert resp.status == 201, await resp.text()
    ids = (await resp.json())["jobIds"]
    assert len(set(ids)) == 1000 and ids == sorted(ids)
    assert count_emails() == 1000
    rows = dict(sql("SELECT id, recipient FROM emails WHERE id = ANY(%s)", ids))
    assert [rows[i] for i in ids] == [f"u{i}@example.com" for i in range(1000)]
    # And one INSERT statement stored them all
    assert len(inserts) == 1, f"{len(inserts)} INSERT statements for one batch"
    # And 1001 emails are refused as a whole
    resp = await client.post("/emails/batch", json={"emails": batch["emails"] + [far()]}, headers=auth)
    body = await error(resp, 400, "validation_error")
    assert "emails" in body["fields"]


async def test_batch_errors_name_the_index_and_the_field_and_store_nothing(client, auth):
    # Given a batch whose items 1 and 3 are bad
    batch = {"emails": [far(), far(recipient="not-an-address"), far(), far()]}
    del batch["emails"][3]["subject"]
    # When it is posted
    body = await error(await client.post("/emails/batch", json=batch, headers=auth), 400, "validation_error")
    # Then the error names each index and field, and nothing was stored
    assert set(body["fields"]["emails"]) == {"1", "3"}
    assert "recipient" in body["fields"]["emails"]["1"]
    assert "subject" in body["fields"]["emails"]["3"]
    assert count_emails() == 0


async def test_a_batch_may_be_larger_than_one_email_may_be(client, auth):
    # Given 20 emails of 100 KB each: 2 MB in all, over the 1 MiB a single email may take
    batch = {"emails": [far(body="<p>" + "x" * 100_000 + "</p>") for _ in range(20)]}
    # Then the batch is stored, and a body over 16 MiB is refused before it is read whole
    assert (await client.post("/emails/batch", json=batch, headers=auth)).status == 201
    assert count_emails() == 20
    huge = {"emails": [far(body="x" * 1_000_000) for _ in range(17)]}
    await error(await client.post("/emails/batch", json=huge, headers=auth), 413, "payload_too_large")
    assert count_emails() == 20


@pytest.mark.parametrize("body", [{}, {"emails": []}, {"emails": "x"}, {"emails": [42]}, {"emails": [], "x": 1}])
async def test_malformed_batches_are_400(client, auth, body):
    await error(await client.post("/emails/batch", json=body, headers=auth), 400, "validation_error")


async def test_batch_refuses_the_idempotency_key_header_and_non_json(client, auth):
    headers = {**auth, "Idempotency-Key": "k"}
    await error(await client.post("/emails/batch", json={"emails": [far()]}, headers=headers), 400, "bad_request")
    await error(await client.post("/emails/batch", data="x", headers={**auth, "Content-Type": "text/plain"}),
                415, "unsupported_media_type")
    await error(await client.post("/emails/batch", json={"emails": [far()]}), 401, "unauthorized")
    assert count_emails() == 0


async def test_batch_keys_replay_existing_emails_in_place(client, auth):
    # Given an email stored earlier with key "old"
    first = await client.post("/emails", json=far(subject="old", idempotencyKey="old"), headers=auth)
    old_id = (await first.json())["jobId"]
    # When a batch repeats it (same payload) between two new ones, one of them twice
    batch = {"emails": [far(subject="n1", idempotencyKey="n1"), far(subject="old", idempotencyKey="old"),
                        far(subject="n1", idempotencyKey="n1"), far(subject="n2")]}
    resp = await client.post("/emails/batch", json=batch, headers=auth)
    # Then the old key gets its old id in place, the repeated key one id, and only two rows are new
    assert resp.status == 201
    ids = (await resp.json())["jobIds"]
    assert ids[1] == old_id and ids[0] == ids[2] and len({ids[0], ids[3], old_id}) == 3
    assert count_emails() == 3
    # And the same batch again stores nothing and answers 200 with the keyed ids (the keyless one is new)
    keyed = {"emails": batch["emails"][:3]}
    again = await client.post("/emails/batch", json=keyed, headers=auth)
    assert again.status == 200 and (await again.json())["jobIds"] == ids[:3]
    assert count_emails() == 3


async def test_a_reused_key_with_another_payload_refuses_the_whole_batch(client, auth):
    # Given a stored email with key "k"
    await client.post("/emails", json=far(subject="first", idempotencyKey="k"), headers=auth)
    # When a batch uses "k" for another email, after a good one
    batch = {"emails": [far(subject="fine"), far(subject="other", idempotencyKey="k")]}
    body = await error(await client.post("/emails/batch", json=batch, headers=auth), 409, "conflict")
    # Then the error names the item, and the good one was not stored either
    assert "emails[1]" in body["message"]
    assert count_emails() == 1
    # And a key repeated within one batch with two payloads is refused the same way
    batch = {"emails": [far(subject="a", idempotencyKey="dup"), far(subject="b", idempotencyKey="dup")]}
    body = await error(await client.post("/emails/batch", json=batch, headers=auth), 409, "conflict")
    assert "emails[1]" in body["message"] and "emails[0]" in body["message"]
    assert count_emails() == 1


async def test_concurrent_batches_sharing_keys_in_opposite_orders_agree(client, auth):
    # Given two batches with the same 50 keys, in opposite orders, posted at once, five times each
    items = [far(subject=f"s{i}", idempotencyKey=f"shared-{i}") for i in range(50)]
    posts = [client.post("/emails/batch", json={"emails": items if n % 2 else items[::-1]}, headers=auth)
             for n in range(10)]
    responses = await asyncio.gather(*posts)
    # Then none failed (no deadlock), and all agree on one id per key
    assert sorted(r.status for r in responses) == [200] * 9 + [201], [r.status for r in responses]
    answers = [(await r.json())["jobIds"] for r in responses]
    forward = answers[1]
    for n, ids in enumerate(answers):
        assert ids == (forward if n % 2 else forward[::-1])
    assert count_emails() == 50


# -- cancel ------------------------------------------------------------------------

async def test_cancel_stops_an_email_already_handed_to_the_worker(client, auth, sink):
    # Given an email due in a second (so it is already in Redis with a delay)
    due = at(1)
    job_id = (await (await client.post("/emails", json=email("c", scheduledAt=iso(due)), headers=auth)).json())["jobId"]
    assert sql("SELECT queued_at IS NOT NULL FROM emails WHERE id = %s", job_id) == [(True,)]
    # When it is cancelled
    resp = await client.post(f"/emails/{job_id}/cancel", headers=auth)
    # Then the answer is the email, CANCELLED, and the audit log says so
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == job_id and body["status"] == "CANCELLED" and body["nextAttemptAt"] is None
    events = (await (await client.get(f"/emails/{job_id}/events", headers=auth)).json())["events"]
    assert [e["kind"] for e in events][-1] == "cancelled"
    # And when its time has passed it never arrived
    await asyncio.sleep(max(0.0, due.timestamp() - time.time()) + 1.0)
    assert sink.arrivals == []
    assert sql("SELECT status FROM emails WHERE id = %s", job_id) == [("CANCELLED",)]


async def test_cancel_is_409_unless_pending_and_404_for_no_email(client, auth, sink):
    # Given an email that was sent
    job_id = (await (await client.post("/emails", json=email("sent"), headers=auth)).json())["jobId"]
    await settle(sink, 1)
    # Then cancelling it is a conflict that names its status
    body = await error(await client.post(f"/emails/{job_id}/cancel", headers=auth), 409, "conflict")
    assert "SENT" in body["message"]
    # And cancelling twice: the second is a conflict
    other = (await (await client.post("/emails", json=far(), headers=auth)).json())["jobId"]
    assert (await client.post(f"/emails/{other}/cancel", headers=auth)).status == 200
    body = await error(await client.post(f"/emails/{other}/cancel", headers=auth), 409, "conflict")
    assert "CANCELLED" in body["message"]
    # And an unknown or malformed id is 404, and no key is 401
    await error(await client.post("/emails/999999/cancel", headers=auth), 404, "not_found")
    await error(await client.post("/emails/abc/cancel", headers=auth), 404, "not_found")
    await error(await client.post("/emails/٣/cancel", headers=auth), 404, "not_found")
    await error(await client.post(f"/emails/{other}/cancel"), 401, "unauthorized")


#: rounds a race test runs at most until each side has won at least once
RACE_ROUNDS = 5


async def race_until_both_sides_win(run_round) -> dict[int, int]:
    """Run `run_round(n)` (which checks its own round and returns each email's answer) until both 200 and 409
    came back, RACE_ROUNDS times at most: a race that only ever goes one way tests nothing."""
    seen: dict[int, int] = {}
    for n in range(RACE_ROUNDS):
        for status in (await run_round(n)).values():
            seen[status] = seen.get(status, 0) + 1
        if set(seen) == {200, 409}:
            return seen
    pytest.fail(f"after {RACE_ROUNDS} rounds the race only ever went one way: {seen}")


async def test_cancel_against_the_worker_claim_exactly_one_wins(client, auth, sink):
    async def race(n: int) -> dict[int, int]:
        # Given 60 emails due at the same moment, 1.5 s from now
        due = at(1.5)
        batch = {"emails": [email(f"race-{n}-{i}", scheduledAt=iso(due)) for i in range(60)]}
        ids = (await (await client.post("/emails/batch", json=batch, headers=auth)).json())["jobIds"]
        before = len(sink.arrivals)

        async def cancel_around_due(job_id: int) -> int:
            # each cancel lands between 50 ms before and 800 ms after the due time, while the worker claims
            # (60 emails due at once take the 4 worker threads a few hundred ms)
            await asyncio.sleep(max(0.0, due.timestamp() - time.time() + random.uniform(-0.05, 0.8)))
            return (await client.post(f"/emails/{job_id}/cancel", headers=auth)).status

        # When every one is cancelled around its due time
        statuses = dict(zip(ids, await asyncio.gather(*(cancel_around_due(i) for i in ids))))
        assert set(statuses.values()) <= {200, 409}
        lost = [i for i, s in statuses.items() if s == 409]
        await settle(sink, before + len(lost))
        # Then a cancelled email never arrived, and every other one arrived exactly once
        arrived = arrivals_by_id(sink)
        rows = dict(sql("SELECT id, status FROM emails WHERE id = ANY(%s)", ids))
        for job_id, status in statuses.items():
            if status == 200:
                assert job_id not in arrived and rows[job_id] == "CANCELLED"
            else:
                assert len(arrived.get(job_id, [])) == 1 and rows[job_id] == "SENT"
        print(f"cancel/claim race, round {n}: {len(ids) - len(lost)} cancelled, {len(lost)} claimed first")
        return statuses

    # And both sides won some of the races, in one round or a few
    await race_until_both_sides_win(race)


# -- reschedule --------------------------------------------------------------------

async def test_a_moved_email_arrives_at_its_new_time_only(client, auth, sink):
    # Given an email due in a second, already handed to the worker with that delay
    job_id = (await (await client.post("/emails", json=email("moved", scheduledAt=iso(at(1))), headers=auth))
              .json())["jobId"]
    # When it is moved three seconds ahead
    new_time = at(3)
    resp = await client.patch(f"/emails/{job_id}", json={"scheduledAt": iso(new_time)}, headers=auth)
    # Then the answer shows the new time
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "PENDING"
    assert abs(datetime.fromisoformat(body["scheduledAt"]).timestamp() - new_time.timestamp()) < 0.002
    # And it arrives once, not before its new time
    await settle(sink, 1)
    assert len(sink.arrivals) == 1
    assert new_time.timestamp() - 0.005 <= sink.arrivals[0].at < new_time.timestamp() + 1.0
    events = (await (await client.get(f"/emails/{job_id}/events", headers=auth)).json())["events"]
    moved = [e for e in events if e["kind"] == "rescheduled"]
    assert len(moved) == 1 and moved[0]["detail"]["previousScheduledAt"]


async def test_an_email_moved_earlier_arrives_at_its_new_time(client, auth, sink):
    # Given an email due in an hour (not handed over yet)
    job_id = (await (await client.post("/emails", json=email("sooner", scheduledAt=iso(at(3600))), headers=auth))
              .json())["jobId"]
    # When it is moved to a second from now
    new_time = at(1)
    resp = await client.patch(f"/emails/{job_id}", json={"scheduledAt": iso(new_time)}, headers=auth)
    assert resp.status == 200
    # Then it arrives then
    await settle(sink, 1)
    assert new_time.timestamp() - 0.005 <= sink.arrivals[0].at < new_time.timestamp() + 1.0


@pytest.mark.parametrize("body,field", [
    ({}, "scheduledAt"), ({"scheduledAt": "2030-10-27T10:00:00"}, "scheduledAt"),
    ({"scheduledAt": None}, "scheduledAt"), ({"scheduledAt": "soon"}, "scheduledAt"),
    ({"scheduledAt": "9999-12-31T23:59:59-14:00"}, "scheduledAt"),
    ({"scheduledAt": "2030-10-27T10:00:00Z", "subject": "x"}, "subject"),
])
async def test_reschedule_validates_its_body(client, auth, body, field):
    job_id = (await (await client.post("/emails", json=far(), headers=auth)).json())["jobId"]
    resp = await client.patch(f"/emails/{job_id}", json=body, headers=auth)
    assert field in (await error(resp, 400, "validation_error"))["fields"]


async def test_reschedule_is_409_unless_pending_404_415_401(client, auth, sink):
    job_id = (await (await client.post("/emails", json=email("gone"), headers=auth)).json())["jobId"]
    await settle(sink, 1)
    later = {"scheduledAt": iso(at(60))}
    body = await error(await client.patch(f"/emails/{job_id}", json=later, headers=auth), 409, "conflict")
    assert "SENT" in body["message"]
    await error(await client.patch("/emails/424242", json=later, headers=auth), 404, "not_found")
    await error(await client.patch(f"/emails/{job_id}", data="x", headers={**auth, "Content-Type": "text/plain"}),
                415, "unsupported_media_type")
    await error(await client.patch(f"/emails/{job_id}", json=later), 401, "unauthorized")


async def test_reschedule_against_the_worker_claim_exactly_one_wins(client, auth, sink):
    async def race(n: int) -> dict[int, int]:
        # Given 60 emails due at the same moment
        due = at(1.5)
        batch = {"emails": [email(f"move-{n}-{i}", scheduledAt=iso(due)) for i in range(60)]}
        ids = (await (await client.post("/emails/batch", json=batch, headers=auth)).json())["jobIds"]
        new_time = due + timedelta(seconds=1.5)
        before = len(sink.arrivals)

        async def move_around_due(job_id: int) -> int:
            await asyncio.sleep(max(0.0, due.timestamp() - time.time() + random.uniform(-0.05, 0.8)))
            resp = await client.patch(f"/emails/{job_id}", json={"scheduledAt": iso(new_time)}, headers=auth)
            return resp.status

        # When every one is moved 1.5 s later, around its due time
        statuses = dict(zip(ids, await asyncio.gather(*(move_around_due(i) for i in ids))))
        assert set(statuses.values()) <= {200, 409}
        await settle(sink, before + len(ids))
        # Then each arrived exactly once: a moved one not before its new time, the others around the old one
        arrived = arrivals_by_id(sink)
        for job_id, status in statuses.items():
            assert len(arrived.get(job_id, [])) == 1, f"email {job_id} arrived {len(arrived.get(job_id, []))} times"
            when = arrived[job_id][0]
            if status == 200:
                assert when >= new_time.timestamp() - 0.005, f"moved email {job_id} arrived early"
            else:
                assert when < new_time.timestamp(), f"email {job_id} claimed at its old time arrived late"
        moved = sum(1 for s in statuses.values() if s == 200)
        print(f"reschedule/claim race, round {n}: {moved} moved, {len(ids) - moved} claimed first")
        return statuses

    # And both sides won some of the races, in one round or a few
    await race_until_both_sides_win(race)


# -- listing -----------------------------------------------------------------------

async def test_list_filters_by_status_and_sender_newest_first(client, auth):
    # Given five emails of two senders, one of them cancelled
    ids = (await (await client.post("/emails/batch", json={"emails": [
        far(senderId="a"), far(senderId="b"), far(senderId="a"), far(senderId="b"), far(senderId="a")]},
        headers=auth)).json())["jobIds"]
    await client.post(f"/emails/{ids[2]}/cancel", headers=auth)

    async def listed(query: str) -> list[int]:
        resp = await client.get(f"/emails?{query}", headers=auth)
        assert resp.status == 200, await resp.text()
        return [item["id"] for item in (await resp.json())["items"]]

    # Then each filter lists its emails newest first
    assert await listed("") == ids[::-1]
    assert await listed("senderId=a") == [ids[4], ids[2], ids[0]]
    assert await listed("status=CANCELLED") == [ids[2]]
    assert await listed("status=PENDING&senderId=a") == [ids[4], ids[0]]
    assert await listed("status=SENT") == []
    # And a page's items carry the email's fields, not its body
    item = (await (await client.get("/emails?limit=1", headers=auth)).json())["items"][0]
    assert item["id"] == ids[4] and item["senderId"] == "a" and "body" not in item


async def test_pages_follow_next_until_null(client, auth):
    ids = (await (await client.post("/emails/batch", json={"emails": [far() for _ in range(7)]}, headers=auth))
           .json())["jobIds"]
    seen, after, pages = [], None, 0
    while True:
        query = "limit=3" + (f"&after={after}" if after else "")
        page = await (await client.get(f"/emails?{query}", headers=auth)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
        assert after == page["items"][-1]["id"]
    assert seen == ids[::-1] and pages == 3


@pytest.mark.parametrize("query", [
    "limit=0", "limit=501", "limit=abc", "limit=", "limit=1.5", "status=BOGUS", "status=", "status=pending",
    "after=0", "after=-1", "after=x", "senderId=has%20space", "unknown=1", "limit=5&limit=6",
])
async def test_bad_list_parameters_are_400_never_a_default(client, auth, query):
    body = await error(await client.get(f"/emails?{query}", headers=auth), 400, "validation_error")
    assert body["fields"], body


async def test_list_needs_a_key(client):
    await error(await client.get("/emails"), 401, "unauthorized")


async def test_pagination_has_no_gaps_or_repeats_while_emails_are_added(client, auth):
    # Given 300 emails
    for _ in range(3):
        await client.post("/emails/batch", json={"emails": [far() for _ in range(100)]}, headers=auth)
    existing = {row[0] for row in sql("SELECT id FROM emails")}
    stop = asyncio.Event()

    async def keep_adding() -> int:
        added = 0
        while not stop.is_set():
            resp = await client.post("/emails/batch", json={"emails": [far() for _ in range(5)]}, headers=auth)
            assert resp.status == 201
            added += 5
        return added

    # When the list is paged through while other requests keep adding emails
    adder = asyncio.create_task(keep_adding())
    seen: list[int] = []
    after = None
    while True:
        query = "limit=23" + (f"&after={after}" if after else "")
        page = await (await client.get(f"/emails?{query}", headers=auth)).json()
        seen += [item["id"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
        await asyncio.sleep(0.01)
    stop.set()
    added = await adder
    # Then ids only go down (no repeats), and every email that existed before is there (no gaps)
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert existing <= set(seen)
    assert added > 0, "nothing was added while paging: the test did not test"


@pytest.mark.timeout(120)
def test_the_list_query_uses_an_index_on_a_large_table(database_url, redis_url):
    # Given 200,000 emails as a long-running service has them: most SENT, a few of each other status,
    # 50 senders, and one small sender ("rare") with 30 emails spread over the whole table; all of account
    # "default" but 25 of a small account spread over it too
    from tests.conftest import clean_state

    clean_state(redis_url)
    with database.connection_context():
        database.execute_sql("""
            INSERT INTO emails (account, recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at)
            SELECT CASE WHEN g %% 7919 = 0 THEN 'small' ELSE 'default' END, 'u' || g || '@example.com', 's', 'b',
                   CASE WHEN g %% 6661 = 0 THEN 'rare' ELSE 'sender_' || (g %% 50) END,
                   CASE WHEN g %% 100 = 1 THEN 'PENDING' WHEN g %% 500 = 2 THEN 'FAILED'
                        WHEN g %% 1000 = 3 THEN 'CANCELLED' ELSE 'SENT' END, now(), now()
            FROM generate_series(1, 200000) g""")
        database.execute_sql("ANALYZE emails")
        try:
            plans = {}
            for name, kwargs in {
                "no filter": {}, "status": {"status": "FAILED"}, "sender": {"sender_id": "sender_7"},
                "rare sender": {"sender_id": "rare"}, "status and sender": {"status": "PENDING", "sender_id": "rare"},
                "deep page": {"status": "SENT", "after": 1000}, "small account": {"account": "small"},
                "small account's sender": {"account": "small", "sender_id": "sender_7"},
            }.items():
                query, params = page_query(**{"account": "default", "status": None, "sender_id": None, "after": None,
                                              **kwargs}, limit=51)
                rows = database.execute_sql("EXPLAIN (ANALYZE, BUFFERS) " + query, params).fetchall()
                plans[name] = "\n".join(r[0] for r in rows)
            rows = database.execute_sql("EXPLAIN (ANALYZE, BUFFERS) " + LIVE_COUNT).fetchall()
            plans["/metrics backlog count"] = "\n".join(r[0] for r in rows)
        finally:
            database.execute_sql("TRUNCATE email_events, emails RESTART IDENTITY CASCADE")
    # Then every page (and the backlog /metrics counts) is read through an index, never by scanning
    # the table, and reads few rows it does not return
    for name, plan in plans.items():
        print(f"-- {name}\n{plan}")
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        assert "Index" in plan, f"{name}:\n{plan}"
        removed = sum(int(line.split(":")[1]) for line in plan.splitlines() if "Rows Removed by Filter" in line)
        assert removed < 5000, f"{name} read {removed} rows it did not return:\n{plan}"
    assert "emails_sender_status_id" in plans["status and sender"]  # migration 2's index
