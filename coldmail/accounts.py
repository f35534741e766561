"""Accounts: who owns an email, a sender or a key. Every API key belongs to one; a key sees only its own.

An account is a name. Static keys name theirs in COLDMAIL_API_KEYS (`account:key`),
stored keys in the api_keys table; rows are owned by the account, never by the key
that made them, so a key can be replaced, or later narrowed by scopes, without
touching the rows.
"""

from __future__ import annotations

import re

#: the account of a key that names none, and of every row made before accounts existed
DEFAULT_ACCOUNT = "default"

#: an account's name: no ':' (it ends the account in `account:key`) and no '/' (it ends it in Redis keys)
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
ACCOUNT_NAME_RULE = "1-64 of A-Z a-z 0-9 . _ -"


def is_account_name(name: str) -> bool:
    return ACCOUNT_NAME.fullmatch(name) is not None
