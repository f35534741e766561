"""SMTP URLs, how replies are sorted into retry-later and give-up, which transport a sender takes, the
in-memory transport and the outbox folder."""

import os
import smtplib
import stat
from datetime import datetime, timezone

import pytest

from coldmail.crypto import PasswordBox, make_key
from coldmail.delivery.routing import Router
from coldmail.errors import ConfigError, PermanentSendError, SecretUnreadable, TransientSendError
from coldmail.mail.memory import MemoryTransport
from coldmail.mail.message import build_message
from coldmail.mail.transports import OutboxTransport, Relay, _classify


def test_relay_urls():
    assert Relay.from_url("smtp://mail.example.com") == Relay("mail.example.com", 25)
    r = Relay.from_url("smtp://u%40x:p%3Ass@mail:587?starttls=require")
    assert (r.host, r.port, r.username, r.password, r.require_starttls, r.implicit_tls) == (
        "mail", 587, "u@x", "p:ss", True, False)
    assert Relay.from_url("smtps://mail").port == 465 and Relay.from_url("smtps://mail").implicit_tls
    assert Relay.from_url("smtp://u:old@mail", password="new").password == "new"
    assert "old" not in repr(Relay.from_url("smtp://u:old@mail"))
    with pytest.raises(ConfigError):
        Relay.from_url("smtp://mail?starttls=maybe")


def test_a_password_requires_starttls_unless_the_url_says_never():
    assert not Relay.from_url("smtp://mail").require_starttls
    assert Relay.from_url("smtp://mail?starttls=require").require_starttls
    assert Relay.from_url("smtp://u:p@mail").require_starttls
    assert Relay.from_url("smtp://u@mail?starttls=auto").require_starttls
    never = Relay.from_url("smtp://u:p@mail?starttls=never")
    assert never.starttls == "never" and not never.require_starttls
    assert not Relay.from_url("smtps://u:p@mail").require_starttls  # TLS from the start
    assert not Relay.from_url("smtp://mail").trusted and Relay.from_url("smtp://mail", trusted=True).trusted


@pytest.mark.parametrize("code,kind", [(421, TransientSendError), (451, TransientSendError),
                                       (452, TransientSendError), (550, PermanentSendError),
                                       (554, PermanentSendError)])
def test_reply_codes(code, kind):
    error = _classify(smtplib.SMTPDataError(code, b"text"))
    assert isinstance(error, kind) and error.code == code and str(error) == f"{code} text"


def test_a_sender_goes_through_its_own_relay_else_smtp_url_s_else_the_outbox():
    # Given a worker with SMTP_URL set, and a sender with a relay and a stored password of its own
    smtp, outbox, box = MemoryTransport(), MemoryTransport(), PasswordBox((make_key(),))
    default = Relay.from_url("smtp://default.example.com")
    router = Router(smtp=smtp, outbox=outbox, default_relay=default, passwords=box)
    own = {"smtp_url": "smtp://me@mine.example.com:2525", "smtp_password_enc": box.seal("s3cret")}
    # Then that sender's emails go through its relay, logged in with its password; the others through
    # SMTP_URL's, or to the outbox without one; and a password no key opens is unreadable (the email is held)
    assert router.route(own) == (smtp, Relay("mine.example.com", 2525, username="me", password="s3cret"))
    assert router.route({"smtp_url": None}) == (smtp, default)
    assert Router(smtp=smtp, outbox=outbox, default_relay=None, passwords=box).route({}) == (outbox, None)
    with pytest.raises(SecretUnreadable):
        Router(smtp=smtp, outbox=outbox, default_relay=None, passwords=PasswordBox(())).route(own)
    with pytest.raises(SecretUnreadable):
        Router(smtp=smtp, outbox=outbox, default_relay=None, passwords=PasswordBox((make_key(),))).route(own)


def test_the_memory_transport_keeps_what_it_is_given_and_fails_as_told():
    # Given a memory transport told to fail its next two sends
    transport = MemoryTransport()
    message = build_message(email_id=1, created_at=datetime.now(timezone.utc), from_address="a@example.com",
                            recipient="b@example.com", subject="hi", body="hello")
    transport.fail_next(TransientSendError("451 later", code=451), PermanentSendError("550 no", code=550))
    # Then they raise those errors in turn, and the next send is kept
    with pytest.raises(TransientSendError):
        transport.send(message, relay=None, email_id=1)
    with pytest.raises(PermanentSendError):
        transport.send(message, relay=None, email_id=1)
    assert transport.send(message, relay=None, email_id=1) == "250 OK"
    assert transport.subjects() == ["hi"] and transport.delivered[0].email_id == 1


def _message():
    return build_message(email_id=7, created_at=datetime.now(timezone.utc), from_address="a@example.com",
                         recipient="b@example.com", subject="private", body="for b only")


def test_outbox_files_are_0600_in_a_0700_folder_whatever_the_umask(tmp_path):
    # Given a process whose umask lets everyone read what it creates
    old = os.umask(0o022)
    try:
        outbox = OutboxTransport(tmp_path / "var" / "outbox")
        reply = outbox.send(_message(), relay=None, email_id=7)
    finally:
        os.umask(old)
    # Then the message is readable by its owner alone, in a folder only its owner can list
    eml = tmp_path / "var" / "outbox" / "7.eml"
    assert b"Subject: private" in eml.read_bytes()
    assert stat.S_IMODE(eml.stat().st_mode) == 0o600
    assert stat.S_IMODE(eml.parent.stat().st_mode) == 0o700
    assert [p.name for p in eml.parent.iterdir()] == ["7.eml"], "no temporary file left behind"
    # And the reply, kept in the email's events, names the file but not where the folder is
    assert reply == "written to the outbox as 7.eml" and str(tmp_path) not in reply


def test_an_outbox_folder_open_to_others_is_closed_to_them(tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    OutboxTransport(folder).send(_message(), relay=None, email_id=7)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "7.eml").stat().st_mode) == 0o600


def test_an_outbox_that_cannot_be_written_is_a_transient_error_that_names_no_path(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(TransientSendError) as caught:
        OutboxTransport(blocker / "outbox").send(_message(), relay=None, email_id=7)
    assert "7.eml" in str(caught.value) and str(tmp_path) not in str(caught.value)
