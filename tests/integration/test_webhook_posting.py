"""How a worker thread posts a batch: a few at once to an endpoint that answers, one at a time to one that does
not, on connections kept between posts; and a batch that waits while its process has email sends in flight."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.fernet import Fernet

from coldmail.queue.sending import SENDS
from coldmail.webhooks import post
from tests.support.db import sql
from tests.support.payloads import email
from tests.support.receiver import Receiver
from tests.support.waiting import async_wait_for


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def poster():
    p = post.Poster(allow_private=True, cache=post.CheckedCache())
    yield p
    p.close()


def requests(url: str, n: int) -> list[post.Request]:
    return [post.Request(url=url, body=json.dumps({"n": i}).encode(),
                         headers=lambda: {"content-type": "application/json"}) for i in range(n)]


def test_an_endpoint_that_answers_gets_a_few_posts_at_once_in_order_on_kept_connections(receiver, poster):
    receiver.delay_s = 0.05
    # When a batch of twelve is posted, four at most at once
    answers = poster.post_many(requests(receiver.url, 12), per_endpoint=4, start_by=time.monotonic() + 30)
    # Then every one is answered, the first alone and the rest in order of starting, four at a time
    assert [a.code for a in answers] == [200] * 12
    assert receiver.received[0].json == {"n": 0}
    assert sorted(r.json["n"] for r in receiver.received) == list(range(12))
    assert receiver.most_at_once == 4
    # on no more connections than were used at once, and the next post reuses one of them
    assert len(receiver.peers) <= 4
    kept = set(receiver.peers)
    assert poster.post(receiver.url, b"{}", {"content-type": "application/json"}).ok
    assert receiver.peers == kept


def test_an_endpoint_that_fails_the_first_post_gets_one_at_a_time(receiver, poster):
    receiver.answers = [503]
    receiver.delay_s = 0.02
    answers = poster.post_many(requests(receiver.url, 5), per_endpoint=4, start_by=time.monotonic() + 30)
    assert [a.code for a in answers] == [503, 200, 200, 200, 200]
    assert [r.json["n"] for r in receiver.received] == [0, 1, 2, 3, 4]
    assert receiver.most_at_once == 1


def test_posts_not_started_by_the_deadline_get_no_answer_and_are_not_sent(receiver, poster):
    answers = poster.post_many(requests(receiver.url, 3), per_endpoint=4, start_by=time.monotonic() - 1)
    assert answers == [None, None, None]
    assert receiver.received == []


def test_close_closes_the_session_and_the_loop(receiver):
    p = post.Poster(allow_private=True, cache=post.CheckedCache())
    assert p.post(receiver.url, b"{}", {}).ok
    session = p.session
    p.close()
    assert session.closed and p.loop.is_closed()
    p.close()  # twice is harmless


async def test_a_delivery_waits_while_its_process_has_a_send_in_flight_then_goes_at_once(
        make_service, auth, receiver):
    client = (await make_service(COLDMAIL_SECRET_KEY=Fernet.generate_key().decode(),
                                 WEBHOOK_YIELD_SECONDS="4")).client
    resp = await client.post("/webhooks", json={"url": receiver.url, "events": ["email.sent"]}, headers=auth)
    assert resp.status == 201
    # Given a send in flight in this process (the in-process worker's) for as long as the test holds it
    with SENDS.sending():
        resp = await client.post("/emails", json=email("Hi"), headers=auth)
        assert resp.status == 201
        # When the email is sent (sends are not held back by each other)
        await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE status = 'SENT'") == [(1,)],
                             timeout_s=10, what="the email sent")
        await asyncio.sleep(1.0)
        # Then its event waits, written but not posted
        assert sql("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'") == [(1,)]
        assert receiver.received == []
        released = time.monotonic()
    # and goes as soon as no send is in flight, well before WEBHOOK_YIELD_SECONDS runs out
    await async_wait_for(lambda: receiver.received, timeout_s=10, what="the delivery after the send ended")
    assert time.monotonic() - released < 2.0
