"""The webhook address guard: what a URL may point at, before and after resolution."""

from __future__ import annotations

import ipaddress

import pytest

from services.outreach.core.netguard import (
    address_errors,
    check_url,
    embedded_ipv4,
    odd_numeric_form,
    parse_legacy_ipv4,
)
from services.outreach.shell.resolve import resolve


async def resolve_and_check(host: str, port: int, allow_private: bool) -> list[str]:
    """Why ``host`` may not be contacted now, judged on the addresses it resolves to."""
    return (await resolve(host, port, allow_private=allow_private)).errors


def refused(url: str, *, allow_private: bool = False, require_https: bool = False) -> str:
    """All the reasons, joined, so a test can look for a word."""
    errors = check_url(url, allow_private=allow_private, require_https=require_https)
    assert errors, f"{url} was accepted"
    return " | ".join(errors)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/tend",
        "http://hooks.example.com:8080/tend?x=1",
        "https://93.184.215.14/hook",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook",
    ],
)
def test_public_endpoints_pass(url: str) -> None:
    assert check_url(url, allow_private=False, require_https=False) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:9000/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.0.0.5/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://172.31.255.254/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://[fd12:3456::1]/", "private"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "reserved"),
        ("http://100.64.0.1/", "not a globally routable"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://[2002:a00:1::]/", "private"),  # 6to4 wrapping 10.0.0.1
        ("http://[64:ff9b::c0a8:101]/", "private"),  # NAT64 wrapping 192.168.1.1
        ("http://localhost:8000/", "loopback"),
        ("http://api.localhost/", "loopback"),
    ],
)
def test_internal_addresses_are_refused(url: str, why: str) -> None:
    assert why in refused(url)


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "0177.1", "127.1", "127.0.1"]
)
def test_numeric_forms_of_loopback_are_refused(host: str) -> None:
    why = refused(f"http://{host}/")
    assert "non-standard numeric form of 127.0.0.1" in why
    assert "loopback" in why
    # Refused even where private endpoints are allowed: readers disagree on these forms.
    assert "non-standard" in refused(f"http://{host}/", allow_private=True)


def test_legacy_ipv4_parsing_matches_inet_aton() -> None:
    assert parse_legacy_ipv4("2130706433") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_legacy_ipv4("0x7f.1") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_legacy_ipv4("0177.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_legacy_ipv4("10.65535") == ipaddress.IPv4Address("10.0.255.255")
    assert parse_legacy_ipv4("1.2.3.256") is None
    assert parse_legacy_ipv4("1.2.3.4.5") is None
    assert parse_legacy_ipv4("08.1.1.1") is None  # not octal: a name, resolved and checked
    assert parse_legacy_ipv4("example.com") is None
    assert odd_numeric_form("127.0.0.1") is None
    assert odd_numeric_form("93.184.215.14") is None


def test_private_allowed_admits_loopback_and_private_but_not_metadata() -> None:
    for url in ("http://127.0.0.1:8080/", "http://[::1]/", "http://10.1.2.3/", "http://localhost/"):
        assert check_url(url, allow_private=True, require_https=False) == []
    for url in (
        "http://169.254.169.254/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ):
        assert check_url(url, allow_private=True, require_https=False)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https:///path-only", "no host"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused(url: str, why: str) -> None:
    assert why in refused(url)


def test_https_required_in_production() -> None:
    assert "must use https" in refused("http://hooks.example.com/", require_https=True)
    assert check_url("https://hooks.example.com/", allow_private=False, require_https=True) == []


def test_embedded_ipv4() -> None:
    assert embedded_ipv4(ipaddress.ip_address("::ffff:10.0.0.1")) == ipaddress.ip_address(
        "10.0.0.1"
    )
    assert embedded_ipv4(ipaddress.ip_address("2606:4700::1")) is None
    assert embedded_ipv4(ipaddress.ip_address("10.0.0.1")) is None
    assert address_errors(ipaddress.ip_address("2606:4700::1111"), allow_private=False) == []


async def test_resolution_checks_the_resolved_addresses() -> None:
    found = await resolve("localhost", 80, allow_private=False)
    assert found.resolved
    assert any(a.is_loopback for a in found.addresses)
    assert any("loopback" in e for e in found.errors)
    assert await resolve_and_check("localhost", 80, allow_private=True) == []


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1"])
async def test_resolution_refuses_numeric_forms(host: str) -> None:
    # The system resolver reads these as 127.0.0.1; the guard refuses both the form and,
    # unless private endpoints are allowed, the address.
    errors = await resolve_and_check(host, 80, allow_private=False)
    assert any("non-standard" in e for e in errors)
    assert any("loopback" in e for e in errors)
    assert await resolve_and_check(host, 80, allow_private=True)


async def test_resolution_of_a_mapped_address() -> None:
    errors = await resolve_and_check("::ffff:127.0.0.1", 80, allow_private=False)
    assert errors and "loopback" in errors[0]


async def test_unresolvable_name_is_not_a_verdict() -> None:
    found = await resolve("no-such-host.invalid", 443, allow_private=False)
    assert not found.resolved
    assert "does not resolve" in found.errors[0]
