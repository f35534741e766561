"""Schemathesis hooks for tests/integration/test_openapi.py (loaded through SCHEMATHESIS_HOOKS): POST /inbound
takes a raw message (message/rfc822), which schemathesis has no serializer for; its generated strings and bytes
go as they are."""

from __future__ import annotations

import schemathesis


@schemathesis.serializer("message/rfc822")
def rfc822(ctx, value) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")
