"""Unsubscribe tokens: what one names comes back only from a key that signed it, and from no other string."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from coldmail.unsubscribe.tokens import MAX_TOKEN_CHARS, TokenSigner, derive_key

K1, K2 = b"1" * 32, b"2" * 32
ACCOUNTS = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
IDS = st.integers(min_value=1, max_value=2**63 - 1)


@settings(max_examples=300, deadline=None, database=None)
@given(account=ACCOUNTS, email_id=IDS)
def test_a_token_names_its_email_under_every_listed_key_and_fits_a_url(account, email_id):
    token = TokenSigner([K1]).sign(account, email_id)
    assert len(token) <= MAX_TOKEN_CHARS and token.isascii() and "=" not in token
    assert TokenSigner([K1]).verify(token) == (account, email_id)
    assert TokenSigner([K2, K1]).verify(token) == (account, email_id)
    assert TokenSigner([K2]).verify(token) is None


@settings(max_examples=300, deadline=None, database=None)
@given(email_id=IDS, at=st.integers(min_value=0), char=st.sampled_from("AQgw_-09"))
def test_no_other_string_is_the_same_token(email_id, at, char):
    token = TokenSigner([K1]).sign("default", email_id)
    at %= len(token)
    other = token[:at] + char + token[at + 1:]
    if other != token:
        assert TokenSigner([K1]).verify(other) is None


def test_the_signing_key_is_derived_not_the_fernet_key_itself():
    key = Fernet.generate_key().decode()
    derived = derive_key(key)
    assert len(derived) == 32 and derived != base64.urlsafe_b64decode(key) and derived == derive_key(key)
    assert derive_key(Fernet.generate_key().decode()) != derived
