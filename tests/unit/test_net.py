"""The outbound guard refuses every spelling of a non-public address, and connects to what it checked."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from coldmail import net

REFUSED = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "localhost", "[::1]", "::1",
    "0.0.0.0", "::", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "fe80::1", "fc00::1", "fd12:3456::1", "224.0.0.1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "64:ff9b::a00:1", "2002:7f00:1::", "240.0.0.1", "255.255.255.255",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("host", REFUSED)
def test_non_public_addresses_are_refused_in_every_spelling(host):
    with pytest.raises(net.BlockedAddress) as refused:
        net.resolve(host, 25, allow_private=False)
    assert "ALLOW_PRIVATE_NETWORKS" in str(refused.value)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_pass(host):
    destination = net.resolve(host, 25, allow_private=False)
    assert destination.addresses and all(net.refusal(ip) is None for ip in destination.addresses)


def test_allow_private_lets_loopback_through():
    destination = net.resolve("localhost", 25, allow_private=True)
    assert any(ip.is_loopback for ip in destination.addresses)


def test_a_name_resolving_to_loopback_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "relay.example.com":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(net.BlockedAddress, match="loopback") as refused:
        net.resolve("relay.example.com", 587, allow_private=False)
    assert "127.0.0.1" not in str(refused.value)  # what internal names resolve to is not told


def test_one_private_answer_among_public_ones_refuses_the_host(monkeypatch):
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("8.8.8.8", "10.1.2.3")]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(net.BlockedAddress, match="private"):
        net.resolve("mixed.example.com", 25, allow_private=False)


def test_an_unresolvable_host_is_a_bad_request():
    with pytest.raises(net.UnresolvableHost):
        net.resolve("no-such-host.invalid", 25, allow_private=False)


def test_connect_uses_the_checked_address_not_a_second_lookup(monkeypatch):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    destination = net.Destination(host="relay.example.com", port=port,
                                  addresses=(ipaddress.ip_address("127.0.0.1"),))

    real = socket.getaddrinfo
    asked = []

    def recording(host, *args, **kwargs):
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    with server, net.connect(destination, timeout=2) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)
    assert "relay.example.com" not in asked
