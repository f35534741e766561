"""The intake service the API holds: accept an email or a batch, cancel, reschedule, and a sender's raised limit.

Each names the account of the request's key and touches only its rows: another
account's email is not found. Each is one statement (a compare-and-set for a
change) in PostgreSQL (coldmail.db.emails); after the commit, what is due within
the horizon goes to the hand-over, which never blocks. One email is stored by group commit on the
event loop; every other method blocks, for the API's executor.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Sequence

import redis
from marshmallow import ValidationError

from ..caps import Caps
from ..db import database
from ..addresses import normalise
from ..db.emails import intake as intake_rows, reads, threads
from ..db.emails.intake import NewEmail
from ..errors import Conflict, NotFound
from ..logs import email_fields
from ..queue.handover import HandOver
from ..settings import Settings
from . import placing
from .group_commit import GroupCommitter, Stored
from .payload import new_email, thread_errors

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, *, settings: Settings, handover: HandOver, caps: Caps) -> None:
        self.settings = settings
        self.handover = handover
        #: the senders' caps, whose planned slots a cancelled or moved email frees
        self.caps = caps
        self.committer = GroupCommitter(settings=settings, after_commit=self._hand_over_marked, caps=caps)

    async def accept(self, account: str, payload: dict[str, Any], idempotency_key: str | None) -> Stored:
        """Store one loaded schedule payload with requests that arrive with it; (row, created) once it is
        committed. Conflict for an idempotency key the account used for a different email."""
        return await self.committer.schedule(new_email(account, payload, idempotency_key))

    def accept_batch(self, account: str, payloads: Sequence[dict[str, Any]]) -> list[Stored]:
        """Store every loaded payload (each with its own idempotencyKey) or none; (row, created) for each,
        in order.

        An idempotency key repeated within the batch, or already stored, with the same
        payload stands for the same email; with another payload the whole batch is a Conflict.
        """
        self.check_threads(account, payloads, batch=True)
        news = [new_email(account, payload, payload["idempotencyKey"]) for payload in payloads]
        first: dict[str, int] = {}
        unique: list[NewEmail] = []
        position: list[int] = []  # index in `unique` of each item of `news`
        for index, new in enumerate(news):
            key = new.idempotency_key
            if key is not None and key in first:
                earlier = first[key]
                if unique[position[earlier]].payload_hash != new.payload_hash:
                    raise Conflict(f"emails[{index}] repeats the idempotency key of emails[{earlier}] "
                                   "with a different email")
                position.append(position[earlier])
                continue
            if key is not None:
                first[key] = index
            position.append(len(unique))
            unique.append(new)

        horizon_s = self.settings.handover_horizon_s
        not_before = placing.placed(self.caps, unique)
        with database.connection_context():
            if not first:  # no idempotency key: nothing to refuse after the insert, one statement is all or none
                stored = intake_rows.insert_batch(unique, horizon_s=horizon_s, not_before=not_before)
            else:
                with database.atomic():
                    stored = intake_rows.insert_batch(unique, horizon_s=horizon_s, not_before=not_before)
                    for index, new in enumerate(news):
                        row, created = stored[position[index]]
                        if not created and row["payload_hash"] != new.payload_hash:
                            raise Conflict(f"emails[{index}]: idempotency key {new.idempotency_key!r} "
                                           "was used for a different email")  # rolls the whole batch back
        created_rows = [row for row, created in stored if created]
        for row in created_rows:
            log.info("email %r: scheduled for %s (sender %r, batch)", row["id"], row["scheduled_at"].isoformat(),
                     row["sender_id"], extra=email_fields(row))
        self._hand_over_marked(created_rows)
        # an item repeated in the batch is "created" once, at its first place
        seen: set[int] = set()
        result = []
        for index in range(len(news)):
            row, created = stored[position[index]]
            result.append((row, created and row["id"] not in seen))
            seen.add(row["id"])
        return result

    def check_threads(self, account: str, payloads: Sequence[dict[str, Any]], *, batch: bool = False) -> None:
        """A ValidationError naming the field (and, in a batch, the index) for a stopOnReply without a sequence
        or an inReplyTo that is not the account's email to the same recipient. Emails are never deleted, so an
        earlier email found here is still there when the new one is stored."""
        errors: dict[int, dict[str, list[str]]] = {}
        for index, payload in enumerate(payloads):
            if found := thread_errors(payload):
                errors[index] = found
        wanted = sorted({p["inReplyTo"] for p in payloads if p.get("inReplyTo") is not None})
        if wanted:
            with database.connection_context():
                known = threads.recipients_of(account, wanted)
            for index, payload in enumerate(payloads):
                parent = payload.get("inReplyTo")
                if parent is None:
                    continue
                if parent not in known:
                    message = f"no email with id {parent}"
                elif known[parent] != normalise(payload["recipient"]):
                    message = f"email {parent} went to another recipient: a thread has one recipient"
                else:
                    continue
                errors.setdefault(index, {})["inReplyTo"] = [message]
        if errors:
            if batch:
                raise ValidationError({"emails": {str(i): e for i, e in errors.items()}})
            raise ValidationError(errors[0])

    def cancel(self, account: str, email_id: int) -> dict[str, Any]:
        """The account's email PENDING → CANCELLED, or NotFound (another account's too) / Conflict. Against a
        worker claiming it at the same moment, exactly one wins: both are compare-and-sets on status PENDING
        of the same row."""
        with database.connection_context():
            row = intake_rows.cancel(account, email_id)
            if row is None:
                _refuse(account, email_id, "cancelled")
        log.info("email %r: cancelled (sender %r)", email_id, row["sender_id"], extra=email_fields(row))
        self.unplan(account, row["sender_id"], [email_id])
        return row

    def reschedule(self, account: str, email_id: int, at: datetime) -> dict[str, Any]:
        """Move the account's PENDING email to `at`, or NotFound (another account's too) / Conflict (a worker
        claimed it first)."""
        not_before = self._window_opening(account, email_id, at)
        with database.connection_context():
            row = intake_rows.reschedule(account, email_id, at=at, horizon_s=self.settings.handover_horizon_s,
                                         not_before=not_before)
            if row is None:
                _refuse(account, email_id, "rescheduled")
        log.info("email %r: rescheduled from %s to %s (sender %r)", email_id, row["previous_at"].isoformat(),
                 row["scheduled_at"].isoformat(), row["sender_id"], extra=email_fields(row))
        self.unplan(account, row["sender_id"], [email_id])
        self._hand_over_marked([row])
        return row

    def _window_opening(self, account: str, email_id: int, at: datetime) -> datetime | None:
        """When the account's email asked for at `at` may go by its sender's window, if later (None: at `at`)."""
        with database.connection_context():
            row = reads.get_email(account, email_id)
        if row is None:
            return None
        new = NewEmail(account=account, recipient=row["recipient"], subject="", body="", sender_id=row["sender_id"],
                       scheduled_at=at, idempotency_key=None, payload_hash="",
                       recipient_time_zone=row["recipient_time_zone"])
        return placing.placed(self.caps, [new])[0]

    def close(self) -> None:
        self.committer.close()

    def _hand_over_marked(self, rows: list[dict[str, Any]]) -> None:
        """Give the hand-over the rows a statement marked queued. It never blocks: its thread plans them under
        their senders' caps and enqueues them, and gives what it cannot back to the scheduler."""
        self.handover.send_planned([row for row in rows if row["queued_at"] is not None])

    def unplan(self, account: str, sender_id: str, email_ids: list[int]) -> None:
        """After the change is committed: the emails' planned slots are free. A Redis error leaves them to
        expire, which only holds the sender's other emails back, never lets one past the cap."""
        try:
            self.caps.unplan(account, sender_id, *email_ids)
        except redis.RedisError as e:
            log.warning("sender %r: planned send slot(s) of email(s) %s stay taken until they expire (Redis: %s)",
                        sender_id, email_ids[:10], e)


def _refuse(account: str, email_id: int, action: str) -> None:
    """After a compare-and-set found nothing: say whether the email is missing (or another account's: the same
    answer, so that a key learns nothing of other accounts) or in another state."""
    row = reads.get_email(account, email_id)
    if row is None:
        raise NotFound(f"no email with id {email_id}")
    raise Conflict(f"email {email_id} is {row['status']}: only a PENDING email can be {action}")
