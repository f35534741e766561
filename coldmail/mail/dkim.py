"""DKIM signatures (RFC 6376): a sender's private key read once, and the signature put on the exact bytes that
go on the wire.

The signature is computed over the bytes coldmail.mail.message made, and its
header is put in front of them: nothing folds or re-encodes the message after
it is signed (a relay-side re-folding broke nodemailer's signatures). dkimpy
parses, canonicalises (relaxed) and hashes the header; the body is
canonicalised here in one pass (relaxed_body, equal to dkimpy's at a third of
its cost), and the RSA signature is made by OpenSSL through `cryptography`, as
dkimpy's own pure-Python RSA costs about 6.5 ms per signature with a 2048-bit
key, twenty times OpenSSL's. `python -m tests.bench.dkim` measures the whole.

Only RSA keys are taken: dkimpy signs and verifies Ed25519 only with PyNaCl,
and a receiver that knows Ed25519 (RFC 8463) still needs an RSA signature
beside it, so an Ed25519 key alone would sign nothing most receivers check.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from dkim import RE_BTAG, fold, hash_headers, rfc822_parse
from dkim.canonicalization import CanonicalizationPolicy

#: the headers signed when present, in this order; From is signed once more, so a second From cannot be added
#: without breaking the signature
SIGNED_HEADERS = (
    b"from", b"to", b"cc", b"reply-to", b"subject", b"date", b"message-id", b"in-reply-to", b"references",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post",
)
#: receivers (Gmail among them) ignore signatures with shorter RSA keys
MIN_RSA_BITS = 1024
#: longer keys cost a receiver's DNS TXT record more than 255-octet strings allow comfortably, and signing
#: time grows with the cube of the size
MAX_RSA_BITS = 4096

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_PKCS1 = padding.PKCS1v15()
#: the digest is computed here, over what dkimpy fed the hasher; OpenSSL only signs it
_PREHASHED_SHA256 = Prehashed(hashes.SHA256())


class UnusableKey(ValueError):
    """The private key is not one coldmail can sign with; the message says why and never repeats the key."""


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """The RSA private key of a PEM text (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`, not
    encrypted); UnusableKey naming what is wrong."""
    try:
        key = load_pem_private_key(pem.strip().encode("ascii"), password=None)
    except UnicodeEncodeError:
        raise UnusableKey("not a PEM private key: it holds non-ASCII characters") from None
    except TypeError:
        raise UnusableKey("the private key is encrypted: give it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UnusableKey("not a readable PEM private key (-----BEGIN PRIVATE KEY----- …)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnusableKey("only RSA keys are supported for DKIM (rsa-sha256)")
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise UnusableKey(f"the RSA key has {key.key_size} bits: between {MIN_RSA_BITS} and {MAX_RSA_BITS} "
                        "are supported (2048 is the usual size)")
    return key


def public_key_record(key: rsa.RSAPrivateKey) -> str:
    """The DNS TXT record's value that publishes `key`'s public half (`v=DKIM1; k=rsa; p=…`)."""
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@dataclass(frozen=True)
class DkimKey:
    """What signs a sender's messages: d=, s= and the parsed key (parsed once, not per message)."""

    domain: str
    selector: str
    private_key: rsa.RSAPrivateKey


def sign(data: bytes, key: DkimKey, *, now: float | None = None) -> bytes:
    """`data` (a whole message with CRLF line ends) with a DKIM-Signature header in front of it: rsa-sha256,
    relaxed/relaxed, over the SIGNED_HEADERS it has. `data` itself is not changed by a byte."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("a message to sign has a blank line between its header and its body")
    # only the header goes through dkimpy's line-by-line parser: the body is canonicalised as one string
    headers, _ = rfc822_parse(data[:end + 4])
    body = data[end + 4:]
    present = {name.lower() for name, _ in headers}
    include = [h for h in SIGNED_HEADERS if h in present] + [b"from"]
    domain, selector = key.domain.encode("ascii"), key.selector.encode("ascii")
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    tags = [
        (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"), (b"d", domain), (b"s", selector),
        (b"t", str(int(time.time() if now is None else now)).encode("ascii")),
        # " : " lets the folding break between names, never inside one (RFC 6376 allows FWS only there)
        (b"h", b" : ".join(include)), (b"bh", body_hash), (b"b", b""),
    ]
    unsigned = fold(b"; ".join(b"=".join(tag) for tag in tags), namelen=len(b"DKIM-Signature"))
    hasher = hashlib.sha256()
    hash_headers(hasher, _RELAXED, _RELAXED.canonicalize_headers(headers), include,
                 (b"DKIM-Signature", b" " + RE_BTAG.sub(b"\\1", unsigned)), None)
    signature = base64.b64encode(key.private_key.sign(hasher.digest(), _PKCS1, _PREHASHED_SHA256))
    return b"DKIM-Signature: " + unsigned + _folded(signature) + b"\r\n" + data


_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
#: runs of white space that are not a single space already: dkimpy's `[\t ]+` replaces every single space of
#: the body by a space, one Python-level replacement each (half of a signature's cost)
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")


def relaxed_body(body: bytes) -> bytes:
    """The body canonicalised as RFC 6376 3.4.4 says (relaxed): what dkimpy's Relaxed.canonicalize_body
    returns (tests/unit/test_dkim.py compares them), at a third of its cost."""
    # quoted-printable bodies (coldmail's) rarely hold anything to change: three substring scans tell
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        body = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\r\n", body))
    end = len(body)
    while body.endswith(b"\r\n", 0, end):  # empty lines at the end are ignored
        end -= 2
    return body[:end] + b"\r\n" if end else b""


def _folded(value: bytes, width: int = 76) -> bytes:
    """The b= value on lines of its own (white space inside b= is ignored by the verifier)."""
    return b"\r\n " + b"\r\n ".join(value[i:i + width] for i in range(0, len(value), width))

