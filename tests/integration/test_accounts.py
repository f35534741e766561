"""Two accounts on one service: each key sees and changes its own account's emails and senders only, has its
own namespace of sender ids and idempotency keys, and its senders' caps count its own sends. And the
migration that brought accounts in moves the rows of the release before to account `default`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from coldmail.db import database, ensure_database, open_database
from coldmail.db.emails import intake as intake_rows, reads
from coldmail.db.emails.intake import NewEmail
from coldmail.db.migrations import MIGRATIONS, migrate
from coldmail.db.senders import get_sender
from tests.conftest import API_KEY, PG_SERVER, TEST_DB
from tests.support.db import sql
from tests.support.payloads import email
from tests.support.waiting import async_wait_for

KEY_A = "key-a-0123456789"
KEY_B = "key-b-0123456789"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
DEFAULT = {"Authorization": f"Bearer {API_KEY}"}


def later(days: int = 30) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()


@pytest.fixture
async def two(make_service):
    """The service with key A of account `a`, key B of account `b`, and the tests' usual key (account
    `default`), all static."""
    return await make_service(COLDMAIL_API_KEYS=f"a:{KEY_A},b:{KEY_B},{API_KEY}", RATE_LIMIT_WINDOW_SECONDS="60")


async def test_another_accounts_email_is_not_found_by_any_endpoint_and_stays_as_it_was(two):
    client = two.client
    # Given an email of account a, due in a month
    resp = await client.post("/emails", json=email("a's", scheduledAt=later()), headers=A)
    assert resp.status == 201
    email_id = (await resp.json())["jobId"]
    before = await (await client.get(f"/emails/{email_id}", headers=A)).json()
    # When account b (and the default account) read, list, cancel and move it
    for other in (B, DEFAULT):
        answers = [await client.get(f"/emails/{email_id}", headers=other),
                   await client.get(f"/emails/{email_id}/events", headers=other),
                   await client.post(f"/emails/{email_id}/cancel", headers=other),
                   await client.patch(f"/emails/{email_id}", json={"scheduledAt": later(1)}, headers=other)]
        # Then every answer is 404, as for an email that does not exist (never 409: it says nothing of it)
        assert [r.status for r in answers] == [404, 404, 404, 404]
        assert {(await r.json())["error"] for r in answers} == {"not_found"}
        # And no listing of theirs shows it, filtered or not
        for query in ("", "?senderId=s1", "?status=PENDING", "?senderId=s1&status=PENDING"):
            page = await (await client.get(f"/emails{query}", headers=other)).json()
            assert page == {"items": [], "next": None}, query
    # And a's email is as it was: PENDING at its time, with no event but its own
    assert await (await client.get(f"/emails/{email_id}", headers=A)).json() == before
    events = await (await client.get(f"/emails/{email_id}/events", headers=A)).json()
    assert [e["kind"] for e in events["events"]] == ["created"]
    # And a itself lists, moves and cancels it
    assert [i["id"] for i in (await (await client.get("/emails", headers=A)).json())["items"]] == [email_id]
    assert (await client.patch(f"/emails/{email_id}", json={"scheduledAt": later(2)}, headers=A)).status == 200
    assert (await client.post(f"/emails/{email_id}/cancel", headers=A)).status == 200


async def test_a_batch_is_stored_for_the_account_of_its_key(two):
    client = two.client
    # When b posts a batch
    resp = await client.post("/emails/batch", json={"emails": [email("b1", scheduledAt=later()),
                                                                email("b2", scheduledAt=later())]}, headers=B)
    assert resp.status == 201
    ids = (await resp.json())["jobIds"]
    # Then the rows are b's, b lists them, and a sees none of them
    assert sql("SELECT DISTINCT account FROM emails WHERE id = ANY(%s)", ids) == [("b",)]
    assert [i["id"] for i in (await (await client.get("/emails", headers=B)).json())["items"]] == ids[::-1]
    assert (await (await client.get("/emails", headers=A)).json())["items"] == []
    assert all([(await client.get(f"/emails/{i}", headers=A)).status == 404 for i in ids])


async def test_the_same_idempotency_key_in_two_accounts_makes_two_emails(two):
    client = two.client
    body = email("same", scheduledAt=later(), idempotencyKey="order-1")
    # When a and b each schedule the same email with the same key
    in_a = await client.post("/emails", json=body, headers=A)
    in_b = await client.post("/emails", json=body, headers=B)
    # Then both are created, as two emails, one for each
    assert (in_a.status, in_b.status) == (201, 201)
    id_a, id_b = (await in_a.json())["jobId"], (await in_b.json())["jobId"]
    assert id_a != id_b
    assert sql("SELECT account FROM emails WHERE id IN (%s, %s) ORDER BY id", id_a, id_b) == [("a",), ("b",)]
    # And each replays to its own email, never the other's
    again_b = await client.post("/emails", json=body, headers=B)
    assert (again_b.status, (await again_b.json())["jobId"]) == (200, id_b)
    # And another email under the key is a conflict in its own account only
    other = email("other", scheduledAt=later(), idempotencyKey="order-2")
    assert (await client.post("/emails", json=other, headers=A)).status == 201
    assert (await client.post("/emails", json=dict(other, subject="changed"), headers=B)).status == 201
    assert (await client.post("/emails", json=dict(other, subject="changed"), headers=A)).status == 409
    # And requests that arrive together, sharing one INSERT, still make one email per account and key
    together = email("together", scheduledAt=later(), idempotencyKey="order-3")
    answers = await asyncio.gather(*(client.post("/emails", json=together, headers=h) for h in (A, B, A, B, A, B)))
    ids = [(await r.json())["jobId"] for r in answers]
    assert ids[0::2] == [ids[0]] * 3 and ids[1::2] == [ids[1]] * 3 and ids[0] != ids[1]
    assert sorted(r.status for r in answers) == [200, 200, 200, 200, 201, 201]
    # And in a batch of a third account (default) the key makes that account's own email
    batch = await client.post("/emails/batch", json={"emails": [body]}, headers=DEFAULT)
    assert batch.status == 201 and (await batch.json())["jobIds"][0] not in (id_a, id_b)


async def test_senders_of_one_id_in_two_accounts_are_two_senders(two, sink):
    client = two.client
    # Given a's sender alice
    put_a = await client.put("/senders/alice", json={"fromAddress": "alice@a.example", "hourlyLimit": 5}, headers=A)
    assert put_a.status == 201
    # Then b does not see it
    assert (await client.get("/senders/alice", headers=B)).status == 404
    # When b makes its own alice, Then it is created, not a's replaced
    put_b = await client.put("/senders/alice", json={"fromAddress": "alice@b.example", "hourlyLimit": 7}, headers=B)
    assert put_b.status == 201
    shown_a = await (await client.get("/senders/alice", headers=A)).json()
    shown_b = await (await client.get("/senders/alice", headers=B)).json()
    assert (shown_a["fromAddress"], shown_a["hourlyLimit"]) == ("alice@a.example", 5)
    assert (shown_b["fromAddress"], shown_b["hourlyLimit"]) == ("alice@b.example", 7)
    # And each account's email through "alice" goes out with its own account's sender
    for headers, subject in ((A, "from a"), (B, "from b")):
        assert (await client.post("/emails", json=email(subject, senderId="alice"), headers=headers)).status == 201
    await async_wait_for(lambda: len(sink.arrivals) == 2, timeout_s=15, what="both emails at the sink")
    sent_from = {a.message["Subject"]: a.message["From"] for a in sink.arrivals}
    assert sent_from == {"from a": "alice@a.example", "from b": "alice@b.example"}
    # And a sender first seen in a schedule request is made in that account only
    assert (await client.post("/emails", json=email(senderId="new", scheduledAt=later()), headers=B)).status == 201
    assert (await client.get("/senders/new", headers=B)).status == 200
    assert (await client.get("/senders/new", headers=A)).status == 404


async def test_a_cap_counts_its_own_accounts_sends_only(two, sink):
    client = two.client
    # Given sender "capped" with a limit of 2 in both accounts
    for headers in (A, B):
        resp = await client.put("/senders/capped", json={"fromAddress": "c@example.com", "hourlyLimit": 2},
                                headers=headers)
        assert resp.status == 201
    # When a sends 2 emails through it (its cap is full), then b sends 2 and a a third
    for n in range(2):
        assert (await client.post("/emails", json=email(f"a{n}", senderId="capped"), headers=A)).status == 201
    await async_wait_for(lambda: len(sink.arrivals) == 2, timeout_s=15, what="a's two sends")
    for n in range(2):
        assert (await client.post("/emails", json=email(f"b{n}", senderId="capped"), headers=B)).status == 201
    third = await client.post("/emails", json=email("a2", senderId="capped"), headers=A)
    third_id = (await third.json())["jobId"]
    # Then b's two go at once: a's sends do not count against b's cap
    await async_wait_for(lambda: len(sink.arrivals) == 4, timeout_s=15, what="b's two sends")
    assert sorted(a.message["Subject"] for a in sink.arrivals) == ["a0", "a1", "b0", "b1"]
    # And a's third is held by a's own cap, moved to when its window frees, not sent
    await async_wait_for(lambda: "rate_limited" in [k for (k,) in sql(
        "SELECT kind FROM email_events WHERE email_id = %s", third_id)], timeout_s=10, what="a's third moved")
    assert len(sink.arrivals) == 4
    # And each account's usage is its own
    for headers in (A, B):
        usage = (await (await client.get("/senders/capped", headers=headers)).json())["usage"]
        assert usage["sentInWindow"] == 2
    # And Redis keeps the two windows apart
    keys = {k.decode() for k in two.queue.broker.client.keys("coldmail:cap:sender:*")}
    assert {"coldmail:cap:sender:a/capped", "coldmail:cap:sender:b/capped"} <= keys


async def test_a_stored_key_reaches_its_own_account_only(two):
    from coldmail.db.apikeys import create_api_key

    client = two.client
    # Given a key made for account b, as `create-api-key NAME --account b` makes it
    with database.connection_context():
        key = create_api_key("b's second key", account="b")
    stored = {"Authorization": f"Bearer {key}"}
    # When it schedules an email, Then it is b's: b's static key sees it, a's does not
    resp = await client.post("/emails", json=email(scheduledAt=later()), headers=stored)
    assert resp.status == 201
    email_id = (await resp.json())["jobId"]
    assert (await client.get(f"/emails/{email_id}", headers=B)).status == 200
    assert (await client.get(f"/emails/{email_id}", headers=A)).status == 404
    assert sql("SELECT account FROM api_keys") == [("b",)]


def test_the_migration_moves_the_rows_of_the_release_before_to_account_default(database_url):
    # Given a database at the schema of the release before accounts (migrations 1 and 2), with its rows:
    # a sender with a limit, an email with an idempotency key, one without, and a stored key
    url = f"{PG_SERVER}/{TEST_DB}_before_accounts"
    session_pool = database.obj
    ensure_database(url)
    old_pool = open_database(url, max_connections=2)
    try:
        with database.connection_context():
            database.execute_sql("DROP TABLE IF EXISTS email_events, emails, senders, api_keys, accounts, "
                                 "schema_migrations CASCADE")
        assert migrate(upto=2) == [1, 2]
        with database.connection_context():
            database.execute_sql("INSERT INTO senders (id, hourly_limit) VALUES ('alice', 5)")
            keyed, plain = [row[0] for row in database.execute_sql(
                "INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at, "
                "idempotency_key, payload_hash) VALUES "
                "('u@example.com', 's', 'b', 'alice', now(), now(), 'k1', 'h1'), "
                "('u@example.com', 's', 'b', 'alice', now(), now(), NULL, 'h2') RETURNING id").fetchall()]
            database.execute_sql("INSERT INTO api_keys (name, key_hash) VALUES ('old', 'abc')")
        # When the migration to accounts runs
        assert migrate() == [version for version, _, _ in MIGRATIONS if version > 2]
        with database.connection_context():
            # Then every row is account default's, as the code reads it
            assert database.execute_sql("SELECT DISTINCT account FROM emails").fetchall() == [("default",)]
            assert database.execute_sql("SELECT account FROM api_keys").fetchall() == [("default",)]
            assert get_sender("default", "alice")["hourly_limit"] == 5
            assert reads.get_email("default", keyed)["idempotency_key"] == "k1"
            assert reads.get_email("other", keyed) is None
            # And the stored idempotency key still finds its email in default, and is free in another account
            new = dict(recipient="u@example.com", subject="s", body="b", sender_id="alice", scheduled_at=None,
                       idempotency_key="k1", payload_hash="h1")
            [(replayed, created)] = intake_rows.insert_batch([NewEmail(account="default", **new)], horizon_s=0)
            assert (replayed["id"], created) == (keyed, False)
            [(fresh, created)] = intake_rows.insert_batch([NewEmail(account="other", **new)], horizon_s=0)
            assert created and fresh["id"] not in (keyed, plain)
            # And that email made a sender of the same id in its account, apart from default's
            assert get_sender("other", "alice")["hourly_limit"] is None
            assert get_sender("default", "alice")["hourly_limit"] == 5
    finally:
        database.initialize(session_pool)
        old_pool.close_all()
        import psycopg2

        conn = psycopg2.connect(PG_SERVER + "/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}_before_accounts" WITH (FORCE)')
        conn.close()
