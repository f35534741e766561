"""A worker thread's part: claim a message's deliveries (one statement), post each signed (to an endpoint
that answers, PER_ENDPOINT at once), record what came of them (the delivered in one statement).

At most WEBHOOK_CONCURRENCY threads of a process post at once: the others are
there to send email, and a receiver that takes its ten seconds to answer must
not hold them. A delivery over that limit goes back to the queue for a second.
Before it claims, a thread gives way to the process's email sends
(WEBHOOK_YIELD_SECONDS at most, see coldmail.queue.sending): webhooks must never
slow email down, and they are as good a few seconds later.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from .. import metrics
from ..crypto import PasswordBox
from ..db import database
from ..db import webhooks as rows
from ..errors import SecretUnreadable
from ..settings import Settings
from . import post, signing

log = logging.getLogger(__name__)

#: a claim outlives the longest attempt (post.TIMEOUT_S) with room to record it; a worker killed mid-post
#: leaves its delivery to be handed over again this long after the claim
LEASE_S = post.TIMEOUT_S + 10
#: a delivery's error when its endpoint's secret cannot be opened (COLDMAIL_SECRET_KEY changed): it is retried
UNREADABLE_SECRET = "the webhook's signing secret cannot be opened: no key of COLDMAIL_SECRET_KEY opens it"
#: what a batch keeps of its lease for recording: no post starts later than LEASE_S - TIMEOUT_S - this
RECORD_ROOM_S = 5.0
#: the longest wait between two attempts
MAX_BACKOFF_S = 3600.0
#: a batch's posts in flight at once to one endpoint, once it answered the batch's first with a 2xx (one at a
#: time otherwise): a few, so that a batch takes a few round trips' time, not one per delivery
PER_ENDPOINT = 4


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    BUSY = "busy"  # every slot taken: try again in a moment, unclaimed
    SKIPPED = "skipped"  # not due, done, or claimed elsewhere


def backoff_s(attempts_before: int, *, base_s: float) -> float:
    """The wait after a failed attempt: base doubled for each earlier attempt, an hour at most, less up to a
    quarter at random so that the retries of many events after one outage do not arrive together."""
    return min(MAX_BACKOFF_S, base_s * 2 ** min(attempts_before, 30)) * random.uniform(0.75, 1.0)


def body_of(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _signed(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    """The headers of an attempt starting now."""
    return signing.headers(secret, msg_id, int(time.time()), body)


class WebhookDeliverer:
    def __init__(self, settings: Settings, *, give_way: Callable[[float], object] | None = None) -> None:
        """`give_way(seconds)` returns once the process's sends leave room for posts, `seconds` at most."""
        self.settings = settings
        self.give_way = give_way
        self.box = PasswordBox(settings.secret_keys)
        self._slots = threading.BoundedSemaphore(settings.webhook_concurrency)
        self._resolved = post.CheckedCache()
        self._thread = threading.local()  # each worker thread's post.Poster (its event loop and session)
        #: opened secrets by sealed value: Fernet's decryption once per endpoint secret, not per delivery
        #: (a changed key or a re-sealed secret is a different sealed value)
        self._secrets: dict[str, str] = {}

    def deliver(self, delivery_id: int) -> Outcome:
        return self.deliver_many([delivery_id]).get(delivery_id, Outcome.SKIPPED)

    def deliver_many(self, delivery_ids: list[int]) -> dict[int, Outcome]:
        """Claim `delivery_ids` in one statement, post them (Poster.post_many: in order, PER_ENDPOINT at once
        to an endpoint that answers), record the delivered ones in one statement (a failed attempt in one of
        its own). All BUSY when every slot is taken; those not due, done or claimed elsewhere are SKIPPED
        (absent). Those whose post could no longer end within the claims' lease (a slow receiver) are given
        back unclaimed, to be handed over again."""
        if not self._slots.acquire(blocking=False):
            return dict.fromkeys(delivery_ids, Outcome.BUSY)
        outcomes: dict[int, Outcome] = {}
        try:
            if self.give_way is not None and self.settings.webhook_yield_s > 0:
                self.give_way(self.settings.webhook_yield_s)  # before the claim: its lease is not spent waiting
            with database.connection_context():
                claimed = rows.claim_many(delivery_ids, lease_s=LEASE_S)
            start_by = time.monotonic() + LEASE_S - post.TIMEOUT_S - RECORD_ROOM_S
            answers = self._post_all(claimed, start_by=start_by)
            tried = [(one, answer) for one, answer in zip(claimed, answers) if answer is not None]
            with database.connection_context():
                rows.release([(one["id"], one["claims"]) for one, answer in zip(claimed, answers) if answer is None])
                done = rows.delivered_many([(one["id"], one["claims"], answer.code)
                                            for one, answer in tried if answer.ok])
                for one, answer in tried:
                    if answer.ok:
                        outcomes[one["id"]] = Outcome.DELIVERED if one["id"] in done else Outcome.SKIPPED
                    else:
                        outcomes[one["id"]] = self._record(one, answer)
        finally:
            self._slots.release()
        for outcome in outcomes.values():
            metrics.WEBHOOK_DELIVERIES.labels(outcome.value).inc()
        return outcomes

    def _post_all(self, claimed: list[dict], *, start_by: float) -> list[post.Answer | None]:
        """Each claimed delivery's answer, in order; an endpoint whose secret does not open is not posted to."""
        answers: list[post.Answer | None] = [None] * len(claimed)
        requests: list[post.Request] = []
        posted: list[int] = []
        for i, one in enumerate(claimed):
            try:
                secret = self._secret(one["secret_enc"])
            except SecretUnreadable:
                answers[i] = post.Answer(code=None, error=UNREADABLE_SECRET)
                continue
            body = body_of(one["payload"])
            requests.append(post.Request(url=one["url"], body=body, headers=functools.partial(
                _signed, secret, one["msg_id"], body)))
            posted.append(i)
        if requests:
            for i, answer in zip(posted, self._poster().post_many(requests, per_endpoint=PER_ENDPOINT,
                                                                  start_by=start_by)):
                answers[i] = answer
        return answers

    def _secret(self, sealed: str) -> str:
        secret = self._secrets.get(sealed)
        if secret is None:
            secret = self.box.open(sealed)  # SecretUnreadable: not kept, tried again next time
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            self._secrets[sealed] = secret
        return secret

    def close_thread(self) -> None:
        """Close the calling thread's Poster (its session, kept connections and loop), if it has one."""
        poster = getattr(self._thread, "poster", None)
        if poster is not None:
            del self._thread.poster
            poster.close()

    def _poster(self) -> post.Poster:
        poster = getattr(self._thread, "poster", None)
        if poster is None:
            poster = self._thread.poster = post.Poster(allow_private=self.settings.allow_private_networks,
                                                       cache=self._resolved)
        return poster

    def _record(self, claimed: dict, answer: post.Answer) -> Outcome:
        if answer.ok:
            recorded = rows.delivered(claimed["id"], claim=claimed["claims"], code=answer.code)
            return Outcome.DELIVERED if recorded else Outcome.SKIPPED
        status = rows.attempt_failed(
            claimed["id"], claim=claimed["claims"], code=answer.code, error=answer.error,
            delay_s=backoff_s(claimed["attempts"], base_s=self.settings.webhook_retry_backoff_s),
            window_s=self.settings.webhook_retry_window_s)
        if status is None:
            return Outcome.SKIPPED
        log.log(logging.ERROR if status == "failed" else logging.INFO,
                "webhook delivery %d (%s) to endpoint %d: %s; %s", claimed["id"], claimed["event_type"],
                claimed["webhook_id"], answer.error, "failed for good" if status == "failed" else "will retry")
        return Outcome.FAILED if status == "failed" else Outcome.RETRY
