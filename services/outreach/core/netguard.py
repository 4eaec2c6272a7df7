"""Where outreach may send: a guard against webhooks and SMTP servers aimed at our own
network (SSRF).

A webhook URL is checked twice. At save time :func:`check_url` looks at the URL alone (scheme,
credentials, a literal address); at send time :func:`services.outreach.shell.resolve.resolve`
checks every address the host *resolves to* with :func:`address_errors`, because a name can
point anywhere, and can be re-pointed between the save and the send (DNS rebinding). The sender
then connects to one of the checked addresses rather than resolving again. This module only
judges; it never resolves a name.

Refused always: the cloud metadata address, unspecified, multicast and reserved addresses, and
hosts written in a non-standard numeric IPv4 form (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
``127.1``): libraries disagree on how to read them, which is how filters get bypassed. Refused
unless ``allow_private`` (local development, tests): loopback, private, link-local and every
other address that is not globally routable. An IPv6 address that embeds an IPv4 one
(IPv4-mapped, 6to4, NAT64) is judged by the embedded address.

An SMTP server an email channel names is judged the same way, at save time by its host
(:func:`host_errors`) and port (:func:`port_errors`, an allowlist), and at send time on the
addresses its host resolves to; the sender connects to a checked address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from functools import lru_cache
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def check_url(url: str, *, allow_private: bool, require_https: bool) -> list[str]:
    """Why ``url`` may not be a webhook endpoint (empty list: it may).

    Looks at the URL only; a host name is judged at send time, on what it resolves to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return [f"is not a valid URL ({exc})"]
    errors: list[str] = []
    scheme = parts.scheme.lower()
    if require_https and scheme != "https":
        errors.append("must use https")
    elif scheme not in ("http", "https"):
        errors.append("must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        errors.append("must not carry credentials (user:password@); use the signing secret")
    host = parts.hostname
    if not host:
        errors.append("has no host")
        return errors
    if port == 0:
        errors.append("has port 0")
    errors.extend(host_errors(host, allow_private=allow_private))
    return errors


def port_errors(port: int, allowed: Collection[int]) -> list[str]:
    """Why an SMTP server may not be reached on ``port`` (empty list: it may): only the
    ports in ``allowed`` (SMTP's own, by default), so that a channel cannot probe other
    services."""
    if port in allowed:
        return []
    listed = ", ".join(str(p) for p in sorted(allowed)) or "none"
    return [f"port {port} is not an SMTP port allowed here (allowed: {listed})"]


def host_errors(host: str, *, allow_private: bool) -> list[str]:
    """Why ``host`` (a name or a literal address, without brackets) may not be contacted,
    judged without resolving it."""
    name = host.rstrip(".").lower()
    odd = odd_numeric_form(name)
    if odd is not None:
        # Refused whatever it denotes: each library reads these forms its own way.
        return [odd_form_error(host, odd), *address_errors(odd, allow_private=allow_private)]
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    if literal is not None:
        return address_errors(literal, allow_private=allow_private)
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return [f"host {host!r} names the loopback interface"]
    return []


def address_errors(address: IPAddress, *, allow_private: bool) -> list[str]:
    """Why ``address`` may not be contacted (empty list: it may)."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return [
            f"{address} embeds {inner}: {error}"
            for error in address_errors(inner, allow_private=allow_private)
        ]
    refused = _never_allowed(address)
    if refused is None and not allow_private:
        refused = _not_public(address)
    return [refused] if refused else []


def _never_allowed(ip: IPAddress) -> str | None:
    if ip in METADATA_ADDRESSES:
        return f"{ip} is the cloud metadata address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return f"{ip} is an unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    # IPv6's reserved blocks include ::1, which is loopback (allowed for local development).
    if ip.is_reserved and not ip.is_loopback:
        return f"{ip} is a reserved address"
    return None


def _not_public(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@lru_cache(maxsize=1024)  # asked at every send of a receiver's, always the same host
def odd_numeric_form(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` denotes if it is a number in any form but the canonical
    dotted quad (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``), else None."""
    address = parse_legacy_ipv4(host.rstrip("."))
    if address is None or str(address) == host.rstrip("."):
        return None
    return address


def odd_form_error(host: str, address: ipaddress.IPv4Address) -> str:
    return (
        f"host {host!r} is a non-standard numeric form of {address}; "
        "write an address as four decimal numbers"
    )


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read the way ``inet_aton`` reads it (1 to 4 parts, each decimal, ``0x`` hex
    or ``0`` octal, the last part filling the remaining bytes), or None if it is not such
    a number. ``127.0.0.1`` parses too; the caller tells canonical from odd forms."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _legacy_number(part)
        if value is None:
            return None
        values.append(value)
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for i, v in enumerate(leading):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _legacy_number(part: str) -> int | None:
    try:
        if part[:2] in ("0x", "0X"):
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None
