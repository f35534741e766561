"""DKIM signing (coldmail.mail.dkim, coldmail.delivery.signing): signatures dkimpy verifies, on bytes left as
they were; keys refused for a reason that never repeats them; keys parsed once per sealed value."""

from __future__ import annotations

from datetime import datetime, timezone

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, NoEncryption, \
    PrivateFormat

from coldmail.crypto import PasswordBox, make_key
from coldmail.delivery.signing import Signer
from coldmail.errors import ConfigError, SecretUnreadable
from coldmail.mail.dkim import DkimKey, UnusableKey, load_private_key, sign
from coldmail.mail.message import build_message
from tests.support.dkim import dns_serving, folded_inside_a_name, rsa_pem, signed_headers

REQUIRED = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}


def message(**fields):
    values = dict(email_id=7, created_at=datetime(2026, 12, 1, tzinfo=timezone.utc), from_address="ann@example.com",
                  recipient="bob@example.org", subject="A note " * 20, body="<p>Hello Bob</p>" * 50)
    values.update(fields)
    return build_message(**values)


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return DkimKey(domain="example.com", selector="s1", private_key=load_private_key(rsa_pem()))


@pytest.fixture(scope="module")
def dns():
    return dns_serving("example.com", "s1", rsa_pem())


def test_a_signed_message_verifies_and_its_bytes_are_left_as_they_were(key, dns):
    data = message().data
    signed = sign(data, key)
    # the signature is the first header, in front of the message's own bytes, untouched
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(data)
    assert signed[:-len(data)].endswith(b"\r\n")
    assert dkim.verify(signed, dnsfunc=dns)
    assert b"a=rsa-sha256;" in signed and b"c=relaxed/relaxed;" in signed
    assert b"d=example.com;" in signed and b"s=s1;" in signed


def test_a_changed_body_or_signed_header_fails_verification(key, dns):
    signed = sign(message().data, key)
    assert not dkim.verify(signed.replace(b"Hello Bob", b"Hello Rob", 1), dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Subject: A note", b"Subject: A nose", 1), dnsfunc=dns)
    # another key under the same name does not verify it either
    assert not dkim.verify(signed, dnsfunc=dns_serving("example.com", "s1", rsa_pem(label="other")))


def test_the_required_headers_and_the_list_unsubscribe_ones_are_signed(key, dns):
    data = message().data
    assert REQUIRED <= set(signed_headers(sign(data, key)))
    # with the one-click headers (added by the unsubscribe part) they are signed too
    head, _, rest = data.partition(b"\r\n")
    with_list = (head + b"\r\nList-Unsubscribe: <https://mail.example.com/u/abc>\r\n"
                 b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" + rest)
    signed = sign(with_list, key)
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_headers(signed))
    assert not folded_inside_a_name(signed)
    assert dkim.verify(signed, dnsfunc=dns)
    # From is signed twice: a second From cannot be added
    assert signed_headers(signed).count("from") == 2


def test_an_internationalised_message_is_signed_too(key, dns):
    data = message(recipient="bjørn@exämple.org", subject="Grüße aus Köln").data
    assert dkim.verify(sign(data, key), dnsfunc=dns)


def _pem(key, encryption=NoEncryption()) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption).decode()


@pytest.mark.parametrize("pem, says", [
    ("not a key", "not a readable PEM private key"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not a readable PEM private key"),
    ("-----BEGIN PRIVATE KEY-----\nüü\n-----END PRIVATE KEY-----", "non-ASCII"),
    (_pem(ec.generate_private_key(ec.SECP256R1())), "only RSA keys"),
    (_pem(ed25519.Ed25519PrivateKey.generate()), "only RSA keys"),
], ids=["text", "bad base64", "non-ASCII", "EC key", "Ed25519 key"])  # named, not by the keys made at import
def test_unusable_keys_are_refused_with_a_reason(pem, says):
    with pytest.raises(UnusableKey, match=says):
        load_private_key(pem)


#: a throwaway 512-bit key (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:512`): cryptography
#: makes none under 1024 bits
SHORT_KEY = """-----BEGIN PRIVATE KEY-----
MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEA7iLNBL598t2abnLx
aa4QO85wohEIjDOoPZsDSTENRDINhOn63oYgNdH66ImNR/HhfRajG65cc2hzr3Dn
uCgi3QIDAQABAkEA0/LRevl47CJkgw125NJxzGkvQm/apb6MbVh8kjZAUoJqevVC
BEYc+oYgMJDSAib6STUIxDA28y8ITDXwfTjxgQIhAPxetA+9qvzk3t5U6tylLpyT
6dsp0r8K+//YtwhVgQfNAiEA8Y+vFu5L1CFaODAlrcmd+JaiCG3CQFLZKDkCIIlm
V1ECIQC/mLqFNM7KnouhKcEA8JsZnqYtkGwCRDmbPJGAz0FdhQIgHGv6fuk01NXD
xr6rgEIrqxcWI4W+iFD3KgtjG67u8rECIQD3xFsEHMxsFlFI0aDH9Ff2/7hkCSfU
xmIOXBgERiTy9Q==
-----END PRIVATE KEY-----"""


def test_encrypted_and_short_keys_are_refused():
    secret = load_private_key(rsa_pem())
    with pytest.raises(UnusableKey, match="encrypted"):
        load_private_key(_pem(secret, BestAvailableEncryption(b"pass")))
    with pytest.raises(UnusableKey, match="512 bits") as refused:
        load_private_key(SHORT_KEY)
    assert "PRIVATE KEY" not in str(refused.value)


class CountingBox(PasswordBox):
    def __init__(self, keys):
        super().__init__(keys)
        self.opened = 0

    def open(self, sealed, *, what="SMTP password"):
        self.opened += 1
        return super().open(sealed, what=what)


def test_the_signer_opens_and_parses_each_sealed_key_once(dns):
    box = CountingBox((make_key(),))
    signer = Signer(box)
    row = {"dkim_domain": "example.com", "dkim_selector": "s1", "dkim_key_enc": box.seal(rsa_pem())}
    for _ in range(5):
        assert dkim.verify(signer.sign(message(), row).data, dnsfunc=dns)
    assert box.opened == 1
    # a new key is a new sealed value: opened once too
    signer.sign(message(), dict(row, dkim_key_enc=box.seal(rsa_pem())))
    assert box.opened == 2
    # a sender without DKIM: the message as it was
    plain = message()
    assert signer.sign(plain, {"dkim_key_enc": None}) is plain


def test_a_key_no_configured_key_opens_is_unreadable_and_not_kept():
    sealed = PasswordBox((make_key(),)).seal(rsa_pem())
    signer = Signer(CountingBox((make_key(),)))
    row = {"dkim_domain": "example.com", "dkim_selector": "s1", "dkim_key_enc": sealed}
    for _ in range(2):
        with pytest.raises(SecretUnreadable, match="DKIM key") as unreadable:
            signer.sign(message(), row)
        assert "PRIVATE KEY" not in str(unreadable.value)
    assert signer._box.opened == 2


def test_a_stored_key_that_cannot_sign_is_a_configuration_error():
    box = PasswordBox((make_key(),))
    row = {"dkim_domain": "example.com", "dkim_selector": "s1", "dkim_key_enc": box.seal("garbage")}
    with pytest.raises(ConfigError, match="DKIM key cannot sign"):
        Signer(box).sign(message(), row)


def test_the_body_is_canonicalised_as_dkimpy_does_it():
    import random

    from dkim.canonicalization import Relaxed

    from coldmail.mail.dkim import relaxed_body

    pieces = [b"a", b"b", b" ", b"  ", b"\t", b"\r\n", b"\r\n\r\n", b" \r\n", b"\t\r\n", b"=20", b"\r", b"\n"]
    rng = random.Random(16)
    bodies = [b"", b"\r\n", b"a", message().data.partition(b"\r\n\r\n")[2]]
    bodies += [b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40))) for _ in range(3000)]
    for body in bodies:
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body
