"""PostgreSQL dropping its connections costs at most one 503 per pooled connection, never a 500."""

from __future__ import annotations

import psycopg2

from coldmail.db import database
from tests.conftest import PG_SERVER, TEST_DB


def drop_all_connections() -> int:
    conn = psycopg2.connect(PG_SERVER + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (TEST_DB,))
        count = cur.fetchone()[0]
    conn.close()
    return count


async def test_api_recovers_after_postgres_drops_its_connections(client, auth):
    # Given a warm pool
    body = {"recipient": "a@example.com", "subject": "s", "body": "b", "senderId": "s1",
            "scheduledAt": "2030-01-01T00:00:00Z"}
    for _ in range(5):
        assert (await client.post("/emails", json=body, headers=auth)).status == 201
    # When PostgreSQL drops every connection of this database
    assert drop_all_connections() > 0
    # Then requests answer 201 or a clear 503 (a broken pooled connection is used once and dropped)
    statuses = []
    for _ in range(30):
        resp = await client.post("/emails", json=body, headers=auth)
        statuses.append(resp.status)
        if resp.status == 503:
            assert (await resp.json())["error"] == "unavailable"
    assert set(statuses) <= {201, 503}, statuses
    assert statuses[-5:] == [201] * 5, statuses
    # And reads (through the pool, not the group commit's own connections) recover the same way
    job_id = (await (await client.post("/emails", json=body, headers=auth)).json())["jobId"]
    reads = []
    for _ in range(40):
        resp = await client.get(f"/emails/{job_id}", headers=auth)
        reads.append(resp.status)
        if reads[-5:] == [200] * 5:
            break
    assert set(reads) <= {200, 503}, reads
    assert reads[-5:] == [200] * 5, reads
    database.close_idle()  # the next tests get a pool without the connections PostgreSQL dropped
