"""The EHLO name (coldmail.mail.helo, SMTP_HELO_NAME): never localhost nor a bare host name."""

from __future__ import annotations

import socket

import pytest

from coldmail.errors import ConfigError
from coldmail.mail.helo import address_literal, helo_name, is_address_literal, usable
from coldmail.settings import Settings


@pytest.mark.parametrize("name, ok", [
    ("mail.example.com", True), ("a.b.example.org", True), ("localhost", False), ("localhost.localdomain", False),
    ("box.localdomain", False), ("app.localhost", False), ("buildhost", False), ("192.0.2.10", False),
    ("-bad.example.com", False), ("a..example.com", False), ("", False),
])
def test_only_a_fully_qualified_name_is_usable(name, ok):
    assert usable(name) is ok


def test_settings_take_a_name_or_an_address_literal_and_refuse_localhost():
    def helo(value):
        return Settings.from_env({"SMTP_HELO_NAME": value}, dotenv=None).smtp_helo_name

    assert helo("mail.example.com") == "mail.example.com"
    assert helo("[192.0.2.10]") == "[192.0.2.10]"
    assert helo("[IPv6:2001:db8::1]") == "[IPv6:2001:db8::1]"
    assert helo("") is None
    for bad in ("localhost", "mailhost", "[300.1.1.1]", "192.0.2.10"):
        with pytest.raises(ConfigError, match="SMTP_HELO_NAME"):
            helo(bad)
    assert is_address_literal("[IPv6:::1]") and not is_address_literal("[::1]")


def test_the_name_falls_back_from_setting_to_fqdn_to_default_froms_domain_to_none():
    assert helo_name("mail.example.com", default_from="a@example.org", fqdn="host.example.net") == "mail.example.com"
    assert helo_name(None, default_from="a@example.org", fqdn="host.example.net") == "host.example.net"
    assert helo_name(None, default_from="a@example.org", fqdn="localhost") == "example.org"
    assert helo_name(None, default_from="a@example.org", fqdn="buildhost") == "example.org"
    assert helo_name(None, default_from="coldmail@localhost", fqdn="localhost.localdomain") is None


def test_without_a_name_ehlo_gives_the_connections_address_as_a_literal():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        assert address_literal(client) == "[127.0.0.1]"
    finally:
        client.close()
        server.close()
