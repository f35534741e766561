"""payload_hash is stored with every row: its written-out fast path must give the very bytes json.dumps gives."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from coldmail.intake.payload import payload_hash

TEXT = st.text(alphabet=st.characters(codec=None), max_size=30)  # controls, quotes, non-ASCII, surrogates
WHEN = st.one_of(st.none(), st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=2))])))


def by_json_dumps(payload: dict) -> str:
    """The definition the stored hashes were made with; `unsubscribe` (added later) counts only when given."""
    canonical = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in sorted(payload.items())
                 if k != "idempotencyKey" and not (k == "unsubscribe" and v is None)}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


@settings(max_examples=1000, deadline=None, database=None)
@given(recipient=TEXT, subject=TEXT, body=TEXT, sender=TEXT, at=WHEN, key=st.one_of(st.none(), TEXT))
def test_the_fast_path_hashes_as_json_dumps_does(recipient, subject, body, sender, at, key):
    payload = {"recipient": recipient, "subject": subject, "body": body, "senderId": sender, "scheduledAt": at,
               "idempotencyKey": key, "unsubscribe": None}
    assert payload_hash(payload) == by_json_dumps(payload)


def test_other_shapes_hash_as_before():
    for payload in ({"recipient": "a@b.c"}, {"recipient": "a@b.c", "subject": "s", "body": "b", "senderId": "s",
                                             "scheduledAt": "2030-01-01", "idempotencyKey": None}):
        assert payload_hash(payload) == by_json_dumps(payload)


def test_a_known_hash_stays_the_same():
    payload = {"recipient": "user@example.com", "subject": "Hi", "body": "Hello", "senderId": "s1",
               "scheduledAt": datetime(2030, 1, 1, tzinfo=timezone.utc), "idempotencyKey": "k"}
    assert payload_hash(payload) == "65f23b9f0daaa8d1af728534fdede658e448b82098c5317ac9c10ad72fc85db6"


def test_unsubscribe_counts_only_when_given():
    # Given the known payload as the schema loads it today (unsubscribe not given: None)
    payload = {"recipient": "user@example.com", "subject": "Hi", "body": "Hello", "senderId": "s1",
               "scheduledAt": datetime(2030, 1, 1, tzinfo=timezone.utc), "idempotencyKey": "k", "unsubscribe": None}
    # Then it hashes as it did before the field existed, so stored idempotency keys still match
    assert payload_hash(payload) == "65f23b9f0daaa8d1af728534fdede658e448b82098c5317ac9c10ad72fc85db6"
    # And given either way, it makes another payload, each hashed as json.dumps would
    hashes = set()
    for flag in (True, False):
        given = dict(payload, unsubscribe=flag)
        assert payload_hash(given) == by_json_dumps(given)
        hashes.add(payload_hash(given))
    assert len(hashes) == 2 and "65f23b9f0daaa8d1af728534fdede658e448b82098c5317ac9c10ad72fc85db6" not in hashes
