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
from .db.emails import handover as handover_rows
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


@dataclass(frozen=True)
class PauseChange:
    """What a PUT says of a sender's pause: `paused` (None: leave it), and its max bounce rate when `set_rate`
    (None: off)."""

    paused: bool | None
    max_bounce_rate: float | None
    set_rate: bool


class Senders:
    def __init__(self, *, settings: Settings, caps: Caps, intake: Intake) -> None:
        self.settings = settings
        self.caps = caps
        self.intake = intake
        self._passwords = PasswordBox(settings.secret_keys)

    def put(self, account: str, sender_id: str, *, from_address: str, hourly_limit: int, smtp_url: str | None,
            smtp_password: str | None, dkim: Dkim | None, imap_url: str | None = None,
            imap_password: str | None = None, pause: PauseChange | None = None,
            pacing: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Create or replace the account's sender; (row, created). BadRequest for a secret without a secret key,
        and for a `dkim` without a key when none is stored; ValidationError (imapUrl) for a mailbox without a
        password given or stored for that URL. A new mailbox URL starts its polling state again.

        One transaction holds the whole PUT, so no email is claimed, placed or handed over by half of it (a new
        sender put paused is never unpaused, a new window never missing): the sender, its mailbox, its `pause`
        (None: as it is) and its `pacing` columns (column -> value, None: off; those missing stay as they are).
        In it, a raised limit gives back their own time to the emails the old cap had moved, a resume to those
        the pause held, and a changed zone or window places the PENDING emails again by it
        (coldmail.db.emails.placement); their planned slots are freed once it is committed."""
        started = time.monotonic()
        sealed = self._passwords.seal(smtp_password) if smtp_password else None
        imap_sealed = self._passwords.seal(imap_password, what="IMAP password") if imap_password else None
        dkim_setting = None
        if dkim is not None:
            key_enc = self._passwords.seal(dkim.private_key, what="DKIM key") if dkim.private_key else None
            dkim_setting = DkimSetting(domain=dkim.domain, selector=dkim.selector, key_enc=key_enc)
        pulled: list[int] = []
        resumed: list[int] = []
        replaced = False
        moved = 0
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
            if not created and row["hourly_limit"] > (previous_limit or self.settings.rate_limit_per_hour):
                pulled = handover_rows.pull_forward(account, sender_id)
            was_paused = now_paused = bool(row["paused"])
            if pause is not None:
                was_paused, now_paused = set_pause(account, sender_id, paused=pause.paused,
                                                   max_bounce_rate=pause.max_bounce_rate, set_rate=pause.set_rate)
                if was_paused and not now_paused:
                    resumed = handover_rows.resume_paused(account, sender_id)
            if pacing:
                before, after = set_pacing(account, sender_id, _dated(pacing, row))
                replaced = any(before[c] != after[c] for c in ("time_zone", "sending_window"))
                if replaced:
                    moved = place_again(account, sender_id, _placer(Pacing.from_row(after)), paused=now_paused)
            if pause is not None or pacing:
                row = get_sender(account, sender_id)
            row["mailbox"] = get_mailbox(account, sender_id)
        self.caps.forget_limit(account, sender_id)
        if replaced:
            self.caps.forget_plan(account, sender_id)
        elif pulled or resumed:
            self.intake.unplan(account, sender_id, pulled + resumed)
        log.info("sender %r of account %r: %s (limit %d, relay %s, password %s, mailbox %s, DKIM %s)", sender_id,
                 account, "created" if created else "replaced", row["hourly_limit"],
                 row["smtp_url"] or "the server's", "stored" if row["smtp_password_enc"] else "none",
                 row["imap_url"] or "none",
                 f"d={row['dkim_domain']} s={row['dkim_selector']}" if row["dkim_key_enc"] else "none")
        if pulled:
            log.info("sender %r of account %r: limit raised; %d email(s) its cap had moved are planned again",
                     sender_id, account, len(pulled))
        if now_paused and not was_paused:
            log.info("sender %r of account %r: paused by PUT; its emails wait", sender_id, account)
        elif was_paused and not now_paused:
            log.info("sender %r of account %r: resumed; %d email(s) its pause held are due again", sender_id,
                     account, len(resumed))
        if replaced:
            log.info("sender %r of account %r: zone or window changed; %d PENDING email(s) placed again in %.3fs",
                     sender_id, account, moved, time.monotonic() - started)
        return self._with_readability(row), created

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


def _dated(pacing: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The pacing columns with a warm-up that has no startDate starting on the sender's local today (by its zone
    as this PUT leaves it)."""
    warmup = pacing.get("warmup")
    if warmup is None or warmup["startDate"] is not None:
        return pacing
    zone = pacing["time_zone"] if "time_zone" in pacing else row["time_zone"]
    today = rules.local_day(datetime.now(timezone.utc), zone or "UTC")
    return dict(pacing, warmup=dict(warmup, startDate=today.isoformat()))


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
