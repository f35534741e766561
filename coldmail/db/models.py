"""Peewee models mirroring the tables that coldmail.db.migrations creates."""

from peewee import (AutoField, BigAutoField, BigIntegerField, BooleanField, CompositeKey, DoubleField, IntegerField,
                    Model, TextField)
from playhouse.postgres_ext import BinaryJSONField, DateTimeTZField

from .connection import database


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Account(BaseModel):
    id = TextField(primary_key=True)
    created_at = DateTimeTZField()

    class Meta:
        table_name = "accounts"


class Sender(BaseModel):
    id = TextField()
    from_address = TextField(null=True)
    hourly_limit = IntegerField(null=True)
    smtp_url = TextField(null=True)
    smtp_password_enc = TextField(null=True)
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()
    account = TextField()
    dkim_domain = TextField(null=True)
    dkim_selector = TextField(null=True)
    dkim_key_enc = TextField(null=True)
    #: migration 8: its emails wait while true; it pauses itself above max_bounce_rate
    paused = BooleanField(default=False)
    max_bounce_rate = DoubleField(null=True)
    # migration 10: pacing (coldmail.caps.pacing), NULL when off
    time_zone = TextField(null=True)
    sending_window = BinaryJSONField(null=True)
    daily_limit = IntegerField(null=True)
    warmup = BinaryJSONField(null=True)
    min_gap_s = IntegerField(null=True)
    jitter_s = IntegerField(null=True)
    #: migration 12: its mailbox (coldmail.mailbox), without the password, and the password sealed
    imap_url = TextField(null=True)
    imap_password_enc = TextField(null=True)

    class Meta:
        table_name = "senders"
        primary_key = CompositeKey("account", "id")


class Email(BaseModel):
    id = BigAutoField()
    recipient = TextField()
    subject = TextField()
    body = TextField()
    sender_id = TextField()
    status = TextField()
    scheduled_at = DateTimeTZField()
    next_attempt_at = DateTimeTZField()
    queued_at = DateTimeTZField(null=True)
    lease_until = DateTimeTZField(null=True)
    attempts = IntegerField()
    last_error = TextField(null=True)
    message_id = TextField(null=True)
    sent_at = DateTimeTZField(null=True)
    idempotency_key = TextField(null=True)
    payload_hash = TextField(null=True)
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()
    account = TextField()
    #: the claim's number, which every update after it names (fencing; migration 4, hence last)
    claims = IntegerField(default=0)
    #: the worker process holding the lease (coldmail.delivery.liveness)
    worker_id = TextField(null=True)
    #: the recipient normalised as a suppression's address is (coldmail.addresses.normalise; migration 7)
    recipient_key = TextField(null=True)
    #: when it hard-bounced (migration 8)
    bounced_at = DateTimeTZField(null=True)
    #: List-Unsubscribe on its message (false: transactional mail; migration 9)
    unsubscribe = BooleanField(default=True)
    # migration 10: the zone the sender's window is read in for this email (NULL: the sender's)
    recipient_time_zone = TextField(null=True)
    #: the chain of emails it belongs to, and whether a reply stops it (migration 11)
    sequence = TextField(null=True)
    stop_on_reply = BooleanField(default=False)
    #: the earlier email whose thread it continues (In-Reply-To, References)
    in_reply_to = BigIntegerField(null=True)
    #: when a reply to it first came (coldmail.inbound)
    replied_at = DateTimeTZField(null=True)

    class Meta:
        table_name = "emails"


class EmailEvent(BaseModel):
    id = BigAutoField()
    email_id = BigIntegerField()
    kind = TextField()
    detail = BinaryJSONField()
    created_at = DateTimeTZField()

    class Meta:
        table_name = "email_events"


class Suppression(BaseModel):
    account = TextField()
    address = TextField()
    reason = TextField()
    sender_id = TextField(null=True)
    email_id = BigIntegerField(null=True)
    created_at = DateTimeTZField()

    class Meta:
        table_name = "suppressions"
        primary_key = CompositeKey("account", "address")


class InboundMessage(BaseModel):
    account = TextField()
    dedupe_key = TextField()
    kind = TextField(null=True)
    email_id = BigIntegerField(null=True)
    received_at = DateTimeTZField()

    class Meta:
        table_name = "inbound_messages"
        primary_key = CompositeKey("account", "dedupe_key")


class ApiKey(BaseModel):
    id = AutoField()
    name = TextField()
    key_hash = TextField(unique=True)
    created_at = DateTimeTZField()
    account = TextField()

    class Meta:
        table_name = "api_keys"


class Mailbox(BaseModel):
    """A sender's mailbox and where its polling stands (migration 12; coldmail.mailbox)."""

    account = TextField()
    sender_id = TextField()
    imap_url = TextField()
    since = DateTimeTZField()
    uidvalidity = BigIntegerField(null=True)
    last_uid = BigIntegerField(null=True)
    status = TextField(default="never")
    failures = IntegerField(default=0)
    last_error = TextField(null=True)
    next_poll_at = DateTimeTZField()
    last_polled_at = DateTimeTZField(null=True)
    leased_by = TextField(null=True)
    lease_until = DateTimeTZField(null=True)

    class Meta:
        table_name = "mailboxes"
        primary_key = CompositeKey("account", "sender_id")
