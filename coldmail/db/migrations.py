"""Versioned schema migrations, applied in order inside one transaction each.

A migration is never edited once released: add a new one instead. An advisory
lock keeps two processes starting at once from applying the same version twice.
"""

from __future__ import annotations

import logging

from .connection import database

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_331_001

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "emails, events, senders, api keys", """
CREATE TABLE senders (
    id                 text PRIMARY KEY,
    from_address       text,
    hourly_limit       integer CHECK (hourly_limit IS NULL OR hourly_limit > 0),
    smtp_url           text,
    smtp_password_enc  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE emails (
    id                 bigserial PRIMARY KEY,
    recipient          text NOT NULL,
    subject            text NOT NULL,
    body               text NOT NULL,
    sender_id          text NOT NULL,
    status             text NOT NULL DEFAULT 'PENDING'
                       CHECK (status IN ('PENDING', 'SENDING', 'SENT', 'FAILED', 'CANCELLED')),
    scheduled_at       timestamptz NOT NULL,
    next_attempt_at    timestamptz NOT NULL,
    queued_at          timestamptz,
    lease_until        timestamptz,
    attempts           integer NOT NULL DEFAULT 0,
    last_error         text,
    message_id         text,
    sent_at            timestamptz,
    idempotency_key    text UNIQUE,
    payload_hash       text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- the hand-over: pending, not yet given to Dramatiq, in due order
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'PENDING' AND queued_at IS NULL;
-- the recovery sweep: handed over but not sent, and claims whose lease ran out
CREATE INDEX emails_queued ON emails (next_attempt_at) WHERE status = 'PENDING' AND queued_at IS NOT NULL;
CREATE INDEX emails_sending ON emails (lease_until) WHERE status = 'SENDING';
-- a sender's sends in the current window (rebuilding the cap after Redis lost it)
CREATE INDEX emails_sender_sent ON emails (sender_id, sent_at) WHERE sent_at IS NOT NULL;
-- listing: newest first, by status or by sender
CREATE INDEX emails_status_id ON emails (status, id DESC);
CREATE INDEX emails_sender_id ON emails (sender_id, id DESC);

CREATE TABLE email_events (
    id          bigserial PRIMARY KEY,
    email_id    bigint NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX email_events_email ON email_events (email_id, id);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""),
    (2, "listing by sender and status", """
-- GET /emails?senderId=&status=: without it the planner walks the primary key and filters,
-- which reads the whole table when the pair is rare (a sender's few PENDING among millions)
CREATE INDEX emails_sender_status_id ON emails (sender_id, status, id DESC);
"""),
    (3, "accounts: every email, sender and key belongs to one", """
-- What a key may reach is its account's rows: the account is on the rows, not on the key, so a key can be
-- replaced or narrowed (scopes: a column of api_keys) without touching another table.
CREATE TABLE accounts (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO accounts (id) VALUES ('default');

-- Every row made before accounts existed is account 'default' (a constant default: no table rewrite).
-- The default stays for rows written by a process of the previous release during an upgrade; coldmail
-- itself always names the account.
ALTER TABLE api_keys ADD COLUMN account text NOT NULL DEFAULT 'default' REFERENCES accounts (id);

ALTER TABLE senders ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE senders DROP CONSTRAINT senders_pkey, ADD PRIMARY KEY (account, id);

ALTER TABLE emails ADD COLUMN account text NOT NULL DEFAULT 'default';
-- an idempotency key is the account's: the same key in two accounts makes two emails (partial: an email
-- without a key costs no entry here)
ALTER TABLE emails DROP CONSTRAINT emails_idempotency_key_key;
CREATE UNIQUE INDEX emails_account_idempotency_key ON emails (account, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- a sender's cap is the account's sender's: rebuilt from (account, sender) sends
DROP INDEX emails_sender_sent;
CREATE INDEX emails_sender_sent ON emails (account, sender_id, sent_at) WHERE sent_at IS NOT NULL;
-- listing is per account: newest first with no filter, by status, by sender, by both
DROP INDEX emails_status_id, emails_sender_id, emails_sender_status_id;
CREATE INDEX emails_account_id ON emails (account, id DESC);
CREATE INDEX emails_status_id ON emails (account, status, id DESC);
CREATE INDEX emails_sender_id ON emails (account, sender_id, id DESC);
CREATE INDEX emails_sender_status_id ON emails (account, sender_id, status, id DESC);
-- the hand-over, claim and sweep indexes (emails_due, emails_queued, emails_sending) stay as they are:
-- the scheduler and the workers serve every account at once
"""),
    (4, "claims fenced by a claim number, held by a worker", """
-- claims: how many times the email was claimed; each claim's number fences every update after it, so a
-- claim whose lease was taken back (and the email claimed again) changes nothing.
-- worker_id: the worker process holding the lease, so the sweep frees it as soon as that process is dead.
ALTER TABLE emails ADD COLUMN claims integer NOT NULL DEFAULT 0, ADD COLUMN worker_id text;
"""),
    (5, "senders' DKIM keys", """
-- A sender's DKIM signing domain (d=), selector (s=) and private key, sealed with COLDMAIL_SECRET_KEY as its
-- SMTP password is: all three or none.
ALTER TABLE senders ADD COLUMN dkim_domain text, ADD COLUMN dkim_selector text, ADD COLUMN dkim_key_enc text,
    ADD CONSTRAINT senders_dkim_whole CHECK (
        (dkim_domain IS NULL) = (dkim_selector IS NULL) AND (dkim_domain IS NULL) = (dkim_key_enc IS NULL));
"""),
    (6, "webhooks and their deliveries (a transactional outbox)", """
-- An account's endpoints. The secret signs every delivery, so it is kept sealed (COLDMAIL_SECRET_KEY),
-- never hashed. The statements that change an email's state join this table on (account, event type):
-- the primary key leads with the account, so with no endpoint that join costs one index probe.
CREATE TABLE webhooks (
    account     text NOT NULL,
    id          bigserial,
    url         text NOT NULL,
    events      text[] NOT NULL CHECK (cardinality(events) > 0),
    secret_enc  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, id)
);

-- The outbox: one row per (event, subscribed endpoint), written by the statement that changes the email.
-- msg_id is the Standard Webhooks `webhook-id`: the same on every attempt, for the receiver to dedupe.
-- queued_until: handed to Dramatiq and not to be handed again before then (a lost message is handed
-- again after it); lease_until: claimed by a worker thread (fenced by `claims`) until then.
CREATE TABLE webhook_deliveries (
    account           text NOT NULL,
    id                bigserial,
    webhook_id        bigint NOT NULL,
    event_type        text NOT NULL,
    msg_id            text NOT NULL DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    claims            integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    queued_until      timestamptz,
    lease_until       timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    PRIMARY KEY (account, id),
    FOREIGN KEY (account, webhook_id) REFERENCES webhooks (account, id) ON DELETE CASCADE
);
-- the hand-over and the oldest-undelivered gauge: the pending ones in creation order, every account at once
-- (as emails_due serves the scheduler); delivered and failed rows cost it nothing
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (id) WHERE status = 'pending';
-- GET /webhooks/{id}/deliveries: latest first
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (account, webhook_id, id DESC);
"""),
    (7, "suppressions: addresses never sent to, checked at acceptance and at the claim", """
-- address: normalised (coldmail.addresses.normalise: local part lower-case, domain IDNA/ASCII lower-case), so
-- one address is one row however it is written
CREATE TABLE suppressions (
    account     text NOT NULL,
    address     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('manual', 'unsubscribed', 'bounced', 'complained')),
    sender_id   text,
    email_id    bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, address)
);

-- SUPPRESSED: never sent because the address is suppressed; BOUNCED: sent, then reported undeliverable
ALTER TABLE emails DROP CONSTRAINT emails_status_check, ADD CONSTRAINT emails_status_check
    CHECK (status IN ('PENDING', 'SENDING', 'SENT', 'FAILED', 'CANCELLED', 'SUPPRESSED', 'BOUNCED'));

-- recipient_key: the recipient normalised as suppressions.address is, so acceptance, the claim and a new
-- suppression match an email to its entry by equality (PostgreSQL has no IDNA). Written at acceptance; the
-- unsent rows of an earlier release get lower(recipient): exact for an ASCII domain (an internationalised one
-- was stored in Unicode, so such a row is not matched by an entry).
ALTER TABLE emails ADD COLUMN recipient_key text;
UPDATE emails SET recipient_key = lower(recipient) WHERE status IN ('PENDING', 'SENDING');
-- a new suppression stops the account's PENDING emails to the address in one statement
CREATE INDEX emails_pending_recipient ON emails (account, recipient_key) WHERE status = 'PENDING';
"""),
    (8, "hard bounces and senders that pause themselves", """
-- paused: the sender's emails wait PENDING, unsent, until it is resumed; max_bounce_rate: the share of hard
-- bounces among its last 100 sends (at least 20) above which it pauses itself (NULL: never)
ALTER TABLE senders ADD COLUMN paused boolean NOT NULL DEFAULT false,
    ADD COLUMN max_bounce_rate double precision CHECK (max_bounce_rate > 0 AND max_bounce_rate <= 1);
-- bounced_at: when the email hard-bounced (its RCPT TO refused as an unknown mailbox or domain, or later)
ALTER TABLE emails ADD COLUMN bounced_at timestamptz;
-- a sender's latest bounces, beside emails_sender_sent: its bounce rate without an index on every send
CREATE INDEX emails_sender_bounced ON emails (account, sender_id, bounced_at) WHERE bounced_at IS NOT NULL;
"""),
    (9, "one-click unsubscribe: the email's flag, its event once, the links' signing key", """
-- unsubscribe: whether the message carries List-Unsubscribe (false: transactional mail); every email stored
-- before offered none, but a constant default is no table rewrite, and a PENDING one goes out with the headers
ALTER TABLE emails ADD COLUMN unsubscribe boolean NOT NULL DEFAULT true;
-- an email's one-click unsubscribe is recorded once, however often the link is posted (ON CONFLICT below it)
CREATE UNIQUE INDEX email_events_unsubscribed ON email_events (email_id) WHERE kind = 'unsubscribed';
-- The key that signs unsubscribe links when COLDMAIL_SECRET_KEY is unset: made once by the first process that
-- needs it, then read by every process, so links stay valid across restarts. One row (id is always true); a
-- service key, not an account's: a link names its email's account inside its signed part.
CREATE TABLE unsubscribe_signing_key (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    secret      bytea NOT NULL CHECK (length(secret) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""),
    (10, "sending like a person: windows, day limits with warm-up, gaps", """
-- a sender's pacing, each column NULL when off: its zone (IANA; NULL: UTC), its window
-- {"days": ["mon", ...], "start": "HH:MM[:SS]", "end": ...} in local wall-clock time, its sends per local day,
-- its warm-up {"startPerDay", "increasePerDay", "startDate"}, and the gap between its sends with its jitter
ALTER TABLE senders ADD COLUMN time_zone text, ADD COLUMN sending_window jsonb,
    ADD COLUMN daily_limit integer CHECK (daily_limit >= 0), ADD COLUMN warmup jsonb,
    ADD COLUMN min_gap_s integer CHECK (min_gap_s >= 0), ADD COLUMN jitter_s integer CHECK (jitter_s >= 0);
-- the recipient's zone (IANA): the sender's window is read in it (NULL: the sender's zone)
-- (a sender's PENDING emails, placed again when its zone or window changes, are found by emails_sender_status_id)
ALTER TABLE emails ADD COLUMN recipient_time_zone text;
"""),
    (11, "replies: sequences, threads, and inbound mail read once", """
-- sequence: a chain of emails to one recipient; stop_on_reply: a reply to any of them cancels its PENDING
-- ones of the same sequence and sender; in_reply_to: the earlier email whose thread the message continues;
-- replied_at: when a reply to it first came
ALTER TABLE emails ADD COLUMN sequence text CHECK (length(sequence) BETWEEN 1 AND 128),
    ADD COLUMN stop_on_reply boolean NOT NULL DEFAULT false,
    ADD COLUMN in_reply_to bigint,
    ADD COLUMN replied_at timestamptz;
-- GET /emails?sequence=: newest first, keyset on id, as the other listings
CREATE INDEX emails_sequence_id ON emails (account, sequence, id DESC) WHERE sequence IS NOT NULL;
-- an inbound message names what it answers by Message-ID: a reply's references, a DSN's returned headers
CREATE INDEX emails_message_id ON emails (account, message_id) WHERE message_id IS NOT NULL;
-- every inbound message once per account, by its Message-ID (or a hash of it when it has none): a second
-- delivery of it finds its row and changes nothing
CREATE TABLE inbound_messages (
    account      text NOT NULL,
    dedupe_key   text NOT NULL,
    kind         text CHECK (kind IN ('bounce', 'complaint', 'auto_reply', 'reply', 'unmatched')),
    email_id     bigint,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, dedupe_key)
);
"""),
    (12, "senders' mailboxes: the IMAP URL and sealed password, and each mailbox's polling state", """
-- imap_url: the sender's mailbox as GET shows it (no password); imap_password_enc: its password, sealed as
-- smtp_password_enc is (coldmail.crypto)
ALTER TABLE senders ADD COLUMN imap_url text, ADD COLUMN imap_password_enc text;
-- One row per sender with an imap_url (written by PUT /senders, removed with the URL). imap_url: the URL this
-- state is for (another URL is another mailbox: its row starts again). since: from when messages are read on a
-- first poll or after a new UIDVALIDITY. last_uid: the last UID handed to the classifier (NULL: not yet chosen).
-- leased_by/lease_until: the poller that holds the mailbox now, so that one process reads it at a time;
-- every write of a poll names its lease (a poller whose lease passed writes nothing).
CREATE TABLE mailboxes (
    account         text NOT NULL,
    sender_id       text NOT NULL,
    imap_url        text NOT NULL,
    since           timestamptz NOT NULL DEFAULT now(),
    uidvalidity     bigint,
    last_uid        bigint,
    status          text NOT NULL DEFAULT 'never' CHECK (status IN ('never', 'ok', 'failing')),
    failures        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_poll_at    timestamptz NOT NULL DEFAULT now(),
    last_polled_at  timestamptz,
    leased_by       text,
    lease_until     timestamptz,
    PRIMARY KEY (account, sender_id),
    FOREIGN KEY (account, sender_id) REFERENCES senders (account, id) ON DELETE CASCADE
);
-- the pollers' claim: due mailboxes, earliest first
CREATE INDEX mailboxes_due ON mailboxes (next_poll_at);
"""),
]


def migrate(*, upto: int | None = None) -> list[int]:
    """Bring the schema up to date (or to version `upto`: a test makes a database of an earlier release);
    return the versions applied now."""
    applied: list[int] = []
    with database.connection_context():
        with database.atomic():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            database.execute_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            done = {row[0] for row in database.execute_sql("SELECT version FROM schema_migrations")}
            for version, name, sql in MIGRATIONS:
                if version in done or (upto is not None and version > upto):
                    continue
                log.info("applying migration %d: %s", version, name)
                database.execute_sql(sql)
                database.execute_sql(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(version)
    return applied
