"""The senders service the API holds: a sender's From address, cap, own relay and DKIM key, and its use of
the cap.

A sender is an account's (two accounts may each have a sender of one id). Its
SMTP password, mailbox (IMAP) password and DKIM private key are stored encrypted (COLDMAIL_SECRET_KEY);
a row read here carries its mailbox's polling state (`mailbox`), and says whether a configured key opens
the SMTP password and DKIM key (`secret_readable`: a changed key holds the sender's emails).
The caps plan with a sender's limit as they last read it: a new limit is forgotten there at once,
and a raised one gives back their own time to the emails the old cap had moved.
Every method blocks, for the API's executor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from marshmallow import ValidationError

from .caps import Caps
from .caps import pacing as rules
from .caps.pacing import Pacing
from .crypto import PasswordBox
from .db import database
from .db.mailboxes import configure as configure_mailbox, get_mailbox
from .db.pauses import bounce_counts, set_pause
from .db.emails.placement import place_again
from .db.senders import DkimSetting, get_sender, put_sender, set_pacing
from .errors import BadRequest
from .intake.service import Intake
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dkim:
    """A sender's DKIM as the API gives it: d=, s= and the private key's PEM (the API checked that it signs;
    None: keep the stored key)."""

    domain: str
    selector: str
    private_key: str | None


class Senders:
    def __init__(self, *, settings: Settings, caps: Caps, intake: Intake) -> None:
        self.settings = settings
        self.caps = caps
        self.intake = intake
        self._passwords = PasswordBox(settings.secret_keys)

    def put(self, account: str, sender_id: str, *, from_address: str, hourly_limit: int, smtp_url: str | None,
            smtp_password: str | None, dkim: Dkim | None, imap_url: str | None = None,
            imap_password: str | None = None) -> tuple[dict[str, Any], bool]:
        """Create or replace the account's sender; (row, created). BadRequest for a secret without a secret key,
        and for a `dkim` without a key when none is stored; ValidationError (imapUrl) for a mailbox without a
        password given or stored for that URL. A new mailbox URL starts its polling state again."""
        sealed = self._passwords.seal(smtp_password) if smtp_password else None
        imap_sealed = self._passwords.seal(imap_password, what="IMAP password") if imap_password else None
        dkim_setting = None
        if dkim is not None:
            key_enc = self._passwords.seal(dkim.private_key, what="DKIM key") if dkim.private_key else None
            dkim_setting = DkimSetting(domain=dkim.domain, selector=dkim.selector, key_enc=key_enc)
        with database.connection_context(), database.atomic():
            if dkim_setting is not None and dkim_setting.key_enc is None:
                stored = get_sender(account, sender_id)
                if stored is None or stored["dkim_key_enc"] is None:
                    raise BadRequest("dkim.privateKey is required: no DKIM key is stored for this sender")
            row, created, previous_limit = put_sender(account, sender_id, from_address=from_address,
                                                      hourly_limit=hourly_limit, smtp_url=smtp_url,
                                                      smtp_password_enc=sealed, dkim=dkim_setting,
                                                      imap_url=imap_url, imap_password_enc=imap_sealed)
            if imap_url is not None and row["imap_password_enc"] is None:
                raise ValidationError({"imapUrl": ["A password is needed: imaps://user:password@host/INBOX (none "
                                                   "is stored for this URL)."]})
            configure_mailbox(account, sender_id, imap_url=imap_url, new_password=imap_sealed is not None)
            row["mailbox"] = get_mailbox(account, sender_id)
        self.caps.forget_limit(account, sender_id)
        if not created and row["hourly_limit"] > (previous_limit or self.settings.rate_limit_per_hour):
            self.intake.limit_raised(account, sender_id)
        log.info("sender %r of account %r: %s (limit %d, relay %s, password %s, mailbox %s, DKIM %s)", sender_id,
                 account, "created" if created else "replaced", row["hourly_limit"],
                 row["smtp_url"] or "the server's", "stored" if row["smtp_password_enc"] else "none",
                 row["imap_url"] or "none",
                 f"d={row['dkim_domain']} s={row['dkim_selector']}" if row["dkim_key_enc"] else "none")
        return self._with_readability(row), created

    def pause(self, account: str, sender_id: str, *, paused: bool | None, max_bounce_rate: float | None,
              set_rate: bool) -> None:
        """Set the account's sender's `paused` (None: leave it) and, when `set_rate`, its max bounce rate (None:
        off). Pausing holds its emails where they are (the hand-over and the claim see it); resuming makes
        them due again at their own time."""
        with database.connection_context():
            was_paused, now_paused = set_pause(account, sender_id, paused=paused, max_bounce_rate=max_bounce_rate,
                                               set_rate=set_rate)
        if now_paused and not was_paused:
            log.info("sender %r of account %r: paused by PUT; its emails wait", sender_id, account)
        elif was_paused and not now_paused:
            self.intake.resume(account, sender_id)

    def pace(self, account: str, sender_id: str, values: dict[str, Any]) -> int:
        """Set the account's sender's pacing columns (`values`: column -> value, None: off; the others stay as
        they are). When its zone or window changed, its PENDING emails are placed again in the same
        transaction, by the new window (coldmail.db.emails.placement); returns how many moved."""
        started = time.monotonic()
        moved = 0
        with database.connection_context(), database.atomic():
            before, after = set_pacing(account, sender_id, values)
            changed = any(before[c] != after[c] for c in ("time_zone", "sending_window"))
            paused = changed and bool(get_sender(account, sender_id)["paused"])
            if changed and not paused:
                moved = place_again(account, sender_id, _placer(Pacing.from_row(after)))
        self.caps.forget_limit(account, sender_id)
        if changed:
            self.caps.forget_plan(account, sender_id)
            log.info("sender %r of account %r: zone or window changed; %d PENDING email(s) placed again in %.3fs",
                     sender_id, account, moved, time.monotonic() - started)
        return moved

    def bounce_counts(self, account: str, sender_id: str) -> tuple[int, int]:
        """(hard bounces, sends) among the sender's last sends: its bounce rate."""
        with database.connection_context():
            return bounce_counts(account, sender_id)

    def get(self, account: str, sender_id: str) -> dict[str, Any] | None:
        """The account's sender, or None (another account's is None too)."""
        with database.connection_context():
            row = get_sender(account, sender_id)
            if row is None:
                return None
            row["mailbox"] = get_mailbox(account, sender_id)
        return self._with_readability(row)

    def _with_readability(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with `secret_readable`: whether a configured key opens every secret it stores (password,
        DKIM key), found by trying (None: none is stored)."""
        sealed = [s for s in (row["smtp_password_enc"], row["dkim_key_enc"]) if s]
        return dict(row, secret_readable=all(self._passwords.opens(s) for s in sealed) if sealed else None)

    def usage(self, account: str, sender_id: str) -> int:
        """Sends (made or under way) in the sender's window, as its cap counts them."""
        return self.caps.usage(account, sender_id)

    def today(self, account: str, sender_id: str, row: dict[str, Any]) -> tuple[int, int | None]:
        """(sends made or under way on the sender's local day, that day's limit with warm-up: None when none)."""
        pacing = Pacing.from_row(row)
        limit = rules.day_limit(pacing, rules.local_day(datetime.now(timezone.utc), pacing.time_zone))
        return self.caps.sent_today(account, sender_id, pacing), limit


def _placer(pacing: Pacing) -> Callable[[datetime, str | None], datetime]:
    """A sender's emails' new time from their own (and their recipient's zone): its window's next opening."""
    if pacing.window is None:
        return lambda at, zone: at
    calendars: dict[str, rules.Calendar] = {}

    def new_time(at: datetime, zone: str | None) -> datetime:
        name = rules.reading_zone(pacing, zone)
        calendar = calendars.get(name)
        if calendar is None:
            calendar = calendars[name] = rules.Calendar(pacing.window, name)
        return calendar.open_at(at)

    return new_time
