"""What the operator does with the secrets stored under COLDMAIL_SECRET_KEY: the start-up check, and
`python run.py rotate-secrets`.

The check runs when the API process starts: it logs each sender with a stored
secret (SMTP password, DKIM key) that no configured key opens (ids only, never
the secret) and a summary, and lets go at once the emails held for senders whose secret opens again (the
operator put the key back and restarted), rather than at the end of their hold.
Rotation re-seals every stored secret with the first key, in one transaction,
so that the other keys can be dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .crypto import PasswordBox
from .db import database
from .db.emails.recovery import resume_held
from .db import webhooks as webhook_rows
from .db.senders import replace_sealed, sealed_secrets
from .errors import SecretUnreadable

log = logging.getLogger(__name__)


#: a sender: (account, sender id)
Sender = tuple[str, str]


def _named(sender: Sender) -> str:
    account, sender_id = sender
    return f"{sender_id!r} of account {account!r}"


@dataclass(frozen=True)
class SecretsCheck:
    readable: list[Sender]
    unreadable: list[Sender]
    #: held emails of readable senders, due again now
    resumed: int


def check_at_start(box: PasswordBox) -> SecretsCheck:
    """Try every stored secret with the configured keys; log the ones that do not open; resume the emails
    held for the ones that do. Blocking."""
    with database.connection_context():
        stored = sealed_secrets()
        # a sender may store two secrets (SMTP password, DKIM key): it is readable when every one opens
        shut = {(account, sender) for account, sender, sealed in stored if not box.opens(sealed)}
        senders = list(dict.fromkeys((account, sender) for account, sender, _ in stored))
        readable = [s for s in senders if s not in shut]
        unreadable = [s for s in senders if s in shut]
        resumed = resume_held(readable, reason="the sender's secret opens again") if readable else 0
    for sender in unreadable:
        log.error("sender %s: no key of COLDMAIL_SECRET_KEY opens a secret it stores (SMTP password or DKIM "
                  "key); its emails are held until the key that sealed it is configured again", _named(sender))
    if unreadable:
        log.error("stored secrets: %d of %d open with no configured key (senders %s): put the old key back "
                  "in COLDMAIL_SECRET_KEY, after the new one, and restart", len(unreadable), len(senders),
                  ", ".join(_named(s) for s in unreadable))
    else:
        log.info("stored secrets: all %d open with the configured keys", len(senders))
    if resumed:
        log.info("stored secrets: %d held email(s) due again now", resumed)
    return SecretsCheck(readable=readable, unreadable=unreadable, resumed=resumed)


@dataclass(frozen=True)
class Rotation:
    resealed: int
    #: sealed with no configured key: left as they are (their emails stay held)
    unreadable: list[Sender]
    #: webhooks ((account, webhook id)) whose signing secret no configured key opens: left as they are
    unreadable_webhooks: list[tuple[str, int]]


def rotate(box: PasswordBox) -> Rotation:
    """Seal every stored secret again with the first configured key, all in one transaction (so that a
    failure leaves every secret as it was). Secrets no key opens are left, and named."""
    resealed, unreadable = 0, []
    with database.connection_context(), database.atomic():
        for account, sender, sealed in sealed_secrets(for_update=True, imap=True):
            try:
                fresh = box.reseal(sealed)
            except SecretUnreadable:
                unreadable.append((account, sender))
                continue
            resealed += replace_sealed(account, sender, old=sealed, new=fresh)
        unreadable_webhooks = []
        for account, webhook_id, sealed in webhook_rows.sealed_secrets(for_update=True):
            try:
                fresh = box.reseal(sealed)
            except SecretUnreadable:
                unreadable_webhooks.append((account, webhook_id))
                continue
            resealed += webhook_rows.replace_sealed(account, webhook_id, old=sealed, new=fresh)
    return Rotation(resealed=resealed, unreadable=unreadable, unreadable_webhooks=unreadable_webhooks)
