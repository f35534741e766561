"""Where a new email is due at acceptance: its own time, or its sender's window's next opening.

So `nextAttemptAt` shows the window-adjusted time from the first answer. The
window is read from the senders' settings the caps keep (at most LIMIT_CACHE_S
old; a PUT in this process forgets them at once); the hand-over and the worker
check the window again with fresh settings, so a stale read can make an email
late, never send it outside its window.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Awaitable, Callable, Sequence

from ..caps import Caps
from ..caps import pacing as rules
from ..caps.pacing import Pacing
from ..db.emails.intake import NewEmail
from ..db.senders import PLACING_COLUMNS, SETTINGS_SQL

SenderRef = tuple[str, str]


def not_before(news: Sequence[NewEmail], pacing: dict[SenderRef, Pacing]) -> list[datetime | None]:
    """Per email, its window's opening when its time falls outside the window (None: its own time)."""
    now = datetime.now(timezone.utc)
    out: list[datetime | None] = []
    for new in news:
        sender = pacing.get((new.account, new.sender_id))
        if sender is None or sender.window is None:
            out.append(None)
            continue
        at = now if new.scheduled_at is None or new.scheduled_at < now else new.scheduled_at
        opens = rules.earliest(at, sender, new.recipient_time_zone)
        out.append(opens if opens > at else None)
    return out


def senders_of(news: Sequence[NewEmail]) -> list[SenderRef]:
    return list(dict.fromkeys((new.account, new.sender_id) for new in news))


def placed(caps: Caps, news: Sequence[NewEmail]) -> list[datetime | None]:
    """not_before for a batch, reading (blocking) the senders' settings the caps do not know yet."""
    senders = senders_of(news)
    known = caps.known_pacing(senders)
    if known is None:
        known = caps.pacing_of(senders)
    return not_before(news, known)


async def placed_async(caps: Caps, fetch: Callable[[str, object], Awaitable[list[dict]]],
                       news: Sequence[NewEmail]) -> list[datetime | None] | None:
    """not_before for the group commit, reading the senders' settings the caps do not know yet on its
    asynchronous connection (`fetch`); None when no email needs one."""
    senders = senders_of(news)
    known = caps.known_pacing(senders)
    if known is None:
        rows = await fetch(SETTINGS_SQL, ([a for a, _ in senders], [s for _, s in senders]))
        caps.remember({(row["account"], row["id"]): {c: row[c] for c in PLACING_COLUMNS} for row in rows}, senders)
        known = caps.known_pacing(senders) or {}
    if not any(p.window is not None for p in known.values()):
        return None
    return not_before(news, known)
