"""The event types an endpoint may subscribe to (the contract's list), and the test event's."""

from __future__ import annotations

#: what endpoints subscribe to. email.sent, .failed, .deferred and .cancelled are written by coldmail's email
#: statements (coldmail.db.outbox); the others by the compliance and replies features that report them.
EVENT_TYPES = ("email.sent", "email.failed", "email.deferred", "email.cancelled", "email.suppressed",
               "email.bounced", "email.complained", "email.replied", "email.unsubscribed")

#: POST /webhooks/{id}/test sends this one; no endpoint subscribes to it
TEST_EVENT = "webhook.test"
