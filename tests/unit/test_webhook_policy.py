"""Webhook URL rules and the address policy (no network: literals and the hosts file)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from safelight.webhooks.ssrf import (
    Policy,
    UrlRefused,
    address_problem,
    check_url,
    parse_url,
    redact,
)

NONE = Policy()


def refused(url: str, policy: Policy = NONE) -> str:
    with pytest.raises(UrlRefused) as info:
        asyncio.run(check_url(url, policy, 2.0))
    return str(info.value)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@example.com/", "user name"),
        ("http://example.com@127.0.0.1/", "user name"),
        ("http://0x7f000001/", "four decimal numbers"),
        ("http://2130706433/", "four decimal numbers"),
        ("http://0177.0.0.1/", "four decimal numbers"),
        ("http://127.1/", "four decimal numbers"),
        ("http://exa mple.com/", "spaces"),
        ("http://127.0.0.1\\@example.com/", "backslashes"),
        ("http://example.com/#frag", "fragment"),
        ("http://[fe80::1%25eth0]/", "invalid host"),
        ("http://example.com:0/", "port"),
        ("http:///nohost", "host"),
    ],
)
def test_syntax_rules(url: str, words: str) -> None:
    with pytest.raises(UrlRefused, match=words):
        parse_url(url)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "reserved"),
        ("::ffff:127.0.0.1", "embedded"),
        ("2002:7f00:1::", "embedded"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "embedded"),  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and kind in problem


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_localhost_is_refused_after_resolution() -> None:
    message = refused("http://localhost:9/hook")
    assert "loopback" in message and "localhost resolves to it" in message
    assert "127.0.0.1" not in message and "::1" not in message  # no DNS answers leaked


def test_allowlist_by_network_and_by_name() -> None:
    policy = Policy.from_entries(["127.0.0.0/8", "internal.example"])
    parsed, ip = asyncio.run(check_url("http://127.0.0.1:8080/x?y=1", policy, 2.0))
    assert str(ip) == "127.0.0.1" and parsed.target == "/x?y=1"
    assert parsed.host_header == "127.0.0.1:8080"
    # The network entry does not allow other private ranges.
    assert "private" in refused("http://10.0.0.1/", policy)
    # ::1 is not in 127.0.0.0/8.
    assert "loopback" in refused("http://[::1]/", policy)


def test_redact_drops_the_query() -> None:
    assert redact("https://h.example/p?token=s3cret") == "https://h.example/p?…"
    assert redact("https://h.example") == "https://h.example/"
