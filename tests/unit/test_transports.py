"""SMTP URLs and how replies are sorted into retry-later and give-up."""

import smtplib

import pytest

from coldmail.errors import ConfigError, PermanentSendError, TransientSendError
from coldmail.mail.transports import Relay, _classify


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


@pytest.mark.parametrize("code,kind", [(421, TransientSendError), (451, TransientSendError),
                                       (452, TransientSendError), (550, PermanentSendError),
                                       (554, PermanentSendError)])
def test_reply_codes(code, kind):
    error = _classify(smtplib.SMTPDataError(code, b"text"))
    assert isinstance(error, kind) and error.code == code and str(error) == f"{code} text"
