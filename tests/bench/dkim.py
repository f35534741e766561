"""`python -m tests.bench.dkim`: the CPU one DKIM signature costs a worker, per email, with a 2048-bit RSA key.

Builds one message as a worker does (coldmail.mail.message), then signs it `--n` times through the worker's
Signer (its key opened and parsed once, on the first message, as a worker does per sender), and prints the
CPU time per signature (process time, so other processes on the machine do not count), the share of it that
is OpenSSL's RSA signature alone, the first signature's (opening and parsing the key), and dkimpy's own
`dkim.sign` for comparison (pure-Python RSA: why coldmail signs with OpenSSL).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.dkim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="signatures (2000)")
    p.add_argument("--bits", type=int, default=2048, help="RSA key size (2048)")
    p.add_argument("--body-chars", type=int, default=2000, help="HTML body length (2000)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    return p


def _cpu_ms(action, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        action()
    return (time.process_time() - started) / n * 1000


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import dkim
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from coldmail.crypto import PasswordBox, make_key
    from coldmail.delivery.signing import Signer
    from coldmail.mail.dkim import load_private_key
    from coldmail.mail.message import build_message
    from tests.support.dkim import rsa_pem

    pem = rsa_pem(args.bits)
    box = PasswordBox((make_key(),))
    row = {"dkim_domain": "example.com", "dkim_selector": "s1", "dkim_key_enc": box.seal(pem)}
    body = ("<p>" + "Hello there, a line of a cold email body. " * (args.body_chars // 42 + 1))[:args.body_chars]
    message = build_message(email_id=1, created_at=datetime.now(timezone.utc), from_address="ann@example.com",
                            recipient="bob@example.org", subject="Comparing notes on release planning", body=body)
    signer = Signer(box)
    first_ms = _cpu_ms(lambda: Signer(box).sign(message, row), 20)
    signer.sign(message, row)
    per_email_ms = _cpu_ms(lambda: signer.sign(message, row), args.n)
    key = load_private_key(pem)
    rsa_ms = _cpu_ms(lambda: key.sign(b"x" * 32, padding.PKCS1v15(), hashes.SHA256()), args.n)
    dkimpy_n = max(10, args.n // 50)
    dkimpy_ms = _cpu_ms(lambda: dkim.sign(message.data, b"s1", b"example.com", pem.encode(),
                                          canonicalize=(b"relaxed", b"relaxed")), dkimpy_n)
    result = {"bits": args.bits, "message_bytes": len(message.data), "n": args.n,
              "per_email_cpu_ms": round(per_email_ms, 4), "openssl_rsa_sign_cpu_ms": round(rsa_ms, 4),
              "canonicalise_and_hash_cpu_ms": round(per_email_ms - rsa_ms, 4),
              "first_email_cpu_ms": round(first_ms, 4), "dkimpy_sign_cpu_ms": round(dkimpy_ms, 4)}
    print(f"DKIM rsa-sha256, {args.bits}-bit key, {len(message.data)}-byte message, {args.n} signatures:")
    print(f"  per email (key cached):        {per_email_ms:.3f} ms CPU")
    print(f"    of which OpenSSL's RSA sign: {rsa_ms:.3f} ms")
    print(f"    canonicalise, hash, header:  {per_email_ms - rsa_ms:.3f} ms")
    print(f"  first email (open + parse):    {first_ms:.3f} ms CPU")
    print(f"  dkimpy's dkim.sign (pure-Python RSA, key parsed each time): {dkimpy_ms:.3f} ms CPU")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
