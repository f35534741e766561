"""DKIM keys made for a test, and the DNS a verifier asks for their public half (dkim.verify's dnsfunc)."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from coldmail.mail.dkim import public_key_record


@lru_cache(maxsize=None)
def rsa_pem(bits: int = 2048, *, label: str = "") -> str:
    """A new RSA private key in PKCS#8 PEM, the same for one (bits, label) in a test session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def dns_serving(domain: str, selector: str, pem: str) -> Callable[..., bytes | None]:
    """A DNS function that answers `{selector}._domainkey.{domain}` with `pem`'s public key record, and
    nothing else (so a signature naming another selector or domain does not verify)."""
    from coldmail.mail.dkim import load_private_key

    record = public_key_record(load_private_key(pem)).encode()
    name = f"{selector}._domainkey.{domain}.".encode()

    def dnsfunc(query: bytes, timeout: float = 5) -> bytes | None:
        return record if query == name else None

    return dnsfunc


def signed_headers(raw: bytes) -> list[str]:
    """The h= tag of the message's DKIM-Signature, as lower-case names."""
    from dkim.util import parse_tag_value
    from email import message_from_bytes

    value = message_from_bytes(raw)["DKIM-Signature"]
    tags = parse_tag_value(value.encode())
    return [h.strip().decode().lower() for h in tags[b"h"].split(b":")]


def folded_inside_a_name(raw: bytes) -> bool:
    """Whether the h= tag folds inside a header name (RFC 6376 allows white space only around colons)."""
    from email import message_from_bytes

    value = message_from_bytes(raw)["DKIM-Signature"]
    h = value.split("h=", 1)[1].split(";", 1)[0]
    return any(any(c.isspace() for c in name.strip()) for name in h.split(":"))
