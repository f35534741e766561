"""The request path's fast loaders give exactly what the schemas give: the same dict, or the same error.

coldmail.api.schemas.FastEmailLoad checks the common request inline and remembers
which domains email-validator accepted; both may only ever take a short cut to
the schema's own answer. These tests compare the two on many inputs, valid and not.
"""

from __future__ import annotations

import string

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from coldmail.api import schemas
from coldmail.api.schemas import (FastBatchLoad, FastEmailLoad, FastLoad, ScheduleBatchSchema, ScheduleEmailSchema,
                                  normalized_address)

SCHEMA = ScheduleEmailSchema()
BATCH = ScheduleBatchSchema()
FAST = FastEmailLoad()
FAST_GENERIC = FastLoad(ScheduleEmailSchema())
FAST_BATCH = FastBatchLoad(ScheduleBatchSchema())
BASE = {"recipient": "user@example.com", "subject": "Hi", "body": "Hello", "senderId": "s1"}

ADDRESSES = [
    "user@example.com", "Postmaster@Example.COM", "INFO@x.com", "Info@X.Com", "a@X.COM", "a..b@x.com", ".a@x.com",
    "a.@x.com", "a@-x.com", "a@x-.com", "a@x", "a@com", "a@localhost", "a@x.test", "a@x.invalid", "a@x.local",
    "a@x.onion", "a@x.arpa", "a@home.arpa", "a@x.c0m", "a@123.com", "a@x.123", "a@1.2.3.4", "a@[1.2.3.4]",
    "a@xn--bcher-kva.example", "A@XN--BCHER-KVA.EXAMPLE", "a@xn--a.com", "a@xn--.com", "a@x..com", "a@.x.com",
    "a@x.com.", "a@x_y.com", "a@ab--cd.com", "a" * 64 + "@x.com", "a" * 65 + "@x.com",
    "a" * 240 + "@example.com", "a" * 300 + "@example.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 60] * 4) + ".com", "x@" + "b." * 120 + "com", "a+tag@example.com", "a'b@example.com",
    "\"quoted\"@example.com", "Name <a@example.com>", "ü@example.com", "a@bücher.example", "a@b@c.com", "", "@x.com",
    "a@", "a @x.com", "a@x.com ", "a\n@x.com", "\ud800@x.com",
]


def outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except (ValidationError, EmailNotValidError) as e:
        return "error", getattr(e, "messages", str(e))


def reference_address(text):
    return validate_email(text, check_deliverability=False).normalized


@pytest.mark.parametrize("address", ADDRESSES)
def test_an_address_is_normalized_or_refused_as_email_validator_does(address):
    schemas._domains.clear()
    first = outcome(normalized_address, address)
    again = outcome(normalized_address, address)  # the domain's verdict remembered
    assert first == again == outcome(reference_address, address)


ADDRESS_CHARS = string.ascii_letters + string.digits + ".-_+!#$%&'*/=?^`{|}~@\"<> ü\n"


@settings(max_examples=1500, deadline=None, database=None)
@given(local=st.text(alphabet=ADDRESS_CHARS, max_size=10),
       domain=st.text(alphabet=string.ascii_letters + string.digits + ".-ü", max_size=14),
       tld=st.sampled_from(["com", "org", "test", "invalid", "local", "x1", "1", "", "COM", "xn--p1ai", "arpa"]))
def test_random_addresses_match_email_validator(local, domain, tld):
    address = f"{local}@{domain}.{tld}" if tld else f"{local}@{domain}"
    expected = outcome(reference_address, address)
    assert outcome(normalized_address, address) == expected
    assert outcome(normalized_address, address) == expected


VALUES = {
    "recipient": ["user@example.com", "Bob@EXAMPLE.com", "x", "a@x", None, 3, "a@b.com\n", "ü@x.com",
                  "\ud800@x.com", "", "postmaster@x.org", ["a@x.com"]],
    "subject": ["Hi", "", "a" * 998, "a" * 999, "x\ny", "x\u2028", None, 5, "\ud800", "tab\tok", "é", "x\x0b"],
    "body": ["<p>x</p>", "", "x\x00", None, {}, "\udfff", "é" * 10],
    "senderId": ["s1", "bench-sender-1", "", "-x", "a" * 128, "a" * 129, "a b", None, 1, "a\n", "é"],
    "scheduledAt": ["2030-12-28T05:00:00Z", "2030-12-28T05:00:00", "2030-12-28T05:00:00+02:00",
                    "9999-12-31T23:59:59Z", "9999-12-31T23:00:00-05:00", "nope", None, 0, "", "2030-12-28",
                    "2030-12-28T05:00:00.123456+00:00"],
    "idempotencyKey": ["k1", "", "a" * 255, "a" * 256, "with space", None, 7, "k\n", "é"],
}
MISSING = object()
PAYLOADS = st.fixed_dictionaries(
    {name: st.one_of(st.just(values[0]), st.sampled_from(values), st.just(MISSING)) for name, values in VALUES.items()},
    optional={"unknown": st.just(1)})


def payload(drawn):
    return {k: v for k, v in drawn.items() if v is not MISSING}


@settings(max_examples=1500, deadline=None, database=None)
@given(drawn=PAYLOADS)
def test_fast_load_gives_what_the_schema_gives(drawn):
    data = payload(drawn)
    expected = outcome(SCHEMA.load, data)
    assert outcome(FAST.load, data) == expected
    assert outcome(FAST_GENERIC.load, data) == expected


@pytest.mark.parametrize("data", [None, [], "x", 1, {}, {"recipient": "a@b.com"}, {**BASE, "x": None}])
def test_fast_load_refuses_what_the_schema_refuses(data):
    assert outcome(FAST.load, data) == outcome(SCHEMA.load, data)


@settings(max_examples=200, deadline=None, database=None)
@given(bad=st.lists(PAYLOADS, max_size=3), size=st.sampled_from([0, 1, 3, 1000, 1001]),
       where=st.integers(min_value=0, max_value=999))
def test_fast_batch_load_gives_what_the_schema_gives(bad, size, where):
    items = [dict(BASE, recipient=f"r{i}@example.com") for i in range(size)]
    for k, drawn in enumerate(bad):
        if items:
            items[(where + k) % len(items)] = payload(drawn)
    data = {"emails": items}
    assert outcome(FAST_BATCH.load, data) == outcome(BATCH.load, data)


@pytest.mark.parametrize("data", [None, {}, {"emails": None}, {"emails": [None]}, {"emails": [BASE], "x": 1},
                                  {"emails": "x"}, {"emails": [BASE, [1]]}])
def test_fast_batch_load_refuses_what_the_schema_refuses(data):
    assert outcome(FAST_BATCH.load, data) == outcome(BATCH.load, data)


@pytest.mark.parametrize("flag", [True, False, None, 1, 0, "true", "false", [], {}])
def test_the_unsubscribe_flag_is_a_json_boolean_on_both_paths(flag):
    data = dict(BASE, unsubscribe=flag)
    fast, reference = outcome(FAST.load, data), outcome(SCHEMA.load, data)
    assert fast == reference
    # only true, false and null (not given) load; 1 and "true" are refused, never taken for true
    assert (fast[0] == "ok") == (flag is None or type(flag) is bool)
    if fast[0] == "ok":
        assert fast[1]["unsubscribe"] is flag
