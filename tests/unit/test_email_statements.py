"""The email statements follow the Email model, EmailStatus and one due-time rule, so a change to any of them
reaches every statement or fails here: a new field cannot silently fall off the fast path."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from coldmail.api.schemas import EmailSchema, ScheduleEmailSchema
from coldmail.db.emails import columns, handover, intake, sending
from coldmail.db.emails.due import due_at
from coldmail.db.emails.intake import NewEmail
from coldmail.db.models import Email
from coldmail.status import EmailStatus

DB = Path(__file__).resolve().parents[2] / "coldmail" / "db"

#: Email columns a request does not supply: the INSERT fills them, the table's defaults do, or a later
#: statement does. A new column belongs here or in NewEmail.
NOT_SUPPLIED = {"id", "next_attempt_at", "queued_at", "status", "lease_until", "claims", "worker_id", "attempts",
                "last_error", "message_id", "sent_at", "created_at", "updated_at", "bounced_at", "replied_at"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def listed(column_list: str) -> list[str]:
    return [c.strip() for c in column_list.split(",")]


def test_every_email_column_is_supplied_by_a_request_or_listed_as_not():
    # Given the model's columns and what a request supplies
    model = [f.column_name for f in Email._meta.sorted_fields]
    supplied = [f.name for f in fields(NewEmail)]
    # Then each column is one or the other, and only one
    assert sorted(supplied + sorted(NOT_SUPPLIED)) == sorted(model)
    assert intake.SUPPLIED_COLUMNS == tuple(supplied)



def test_the_prepared_insert_takes_and_stores_every_supplied_column_with_the_model_type():
    statement = intake.PREPARE_INSERT_BATCH
    # Then the INSERT names every supplied column, and the one the due-time rule fills
    inserted = listed(re.search(r"INSERT INTO emails \(([^)]*)\)", statement).group(1))
    assert set(intake.SUPPLIED_COLUMNS) <= set(inserted)
    assert "next_attempt_at" in inserted and "queued_at" in inserted
    # And each travels as one array of its model type, numbered in order, the horizon last
    types = {"TEXT": "text[]", "TIMESTAMPTZ": "timestamptz[]", "BOOL": "boolean[]", "BIGINT": "bigint[]"}
    expected = [types[Email._meta.fields[name].field_type] for name in intake.SUPPLIED_COLUMNS] + [
        "timestamptz[]", "float8"]
    assert statement.startswith(f"PREPARE coldmail_insert_batch ({', '.join(expected)}) AS")
    for number, name in enumerate(intake.SUPPLIED_COLUMNS, 1):
        assert f"${number}::{expected[number - 1]}" in statement
    assert "%(" not in statement


def test_every_field_a_schedule_request_has_reaches_the_insert():
    # Given the request schema's fields (and the payload hash computed from them)
    requested = {snake(name) for name in ScheduleEmailSchema().fields}
    # Then each is a column the INSERT stores, beside the hash, the account (the key's, not the request's) and
    # the recipient's suppression key (derived from the recipient)
    assert requested | {"payload_hash", "account", "recipient_key"} == set(intake.SUPPLIED_COLUMNS)


def test_column_lists_follow_the_model():
    model = [f.column_name for f in Email._meta.sorted_fields]
    assert listed(columns.EMAIL_COLUMNS) == model
    assert set(listed(columns.STORED_COLUMNS)) <= set(model)
    # a listing reads every field an email's answer shows, and never the body
    assert {snake(name) for name in EmailSchema().fields} == set(listed(columns.LIST_COLUMNS))
    assert "body" not in listed(columns.LIST_COLUMNS)


def test_statuses_in_sql_come_from_email_status():
    assert [columns.PENDING, columns.SENDING, columns.SENT, columns.FAILED, columns.CANCELLED, columns.SUPPRESSED,
            columns.BOUNCED] == [
        f"'{s.value}'" for s in EmailStatus]
    # no statement spells a status out (the first migration's CHECK is history, never edited)
    spelled = re.compile("|".join(f"'{s.value}'" for s in EmailStatus))
    for path in DB.rglob("*.py"):
        if path.name != "migrations.py":
            assert not spelled.search(path.read_text()), path


def test_the_due_time_rule_is_written_once():
    # Then only due.py writes `greatest(…, now…)`; the statements that place an email in time call it
    for path in DB.rglob("*.py"):
        if path.name != "due.py":
            assert not re.search(r"greatest\([^()]*, now\(\)", path.read_text()), path
    assert due_at("scheduled_at") in intake.PREPARE_INSERT_BATCH
    assert due_at("%(at)s::timestamptz") in intake._RESCHEDULE
    assert due_at("scheduled_at") in handover._PULL_FORWARD
    assert due_at("next_attempt_at", earliest="now() + %(delay_s)s * interval '1 second'") in sending._RELEASE
