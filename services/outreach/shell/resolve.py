"""Resolving a webhook's host and judging every address it resolves to (the send-time half of
:mod:`services.outreach.core.netguard`, which judges URLs and addresses without resolving)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass

from services.outreach.core import netguard


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a host resolved to, and why (if at all) it may not be contacted.

    ``addresses`` is empty when the name did not resolve; ``errors`` then says so, and the
    caller may try again later (a DNS failure is not a verdict on the endpoint)."""

    addresses: tuple[netguard.IPAddress, ...]
    errors: list[str]

    @property
    def resolved(self) -> bool:
        return bool(self.addresses)


async def resolve(host: str, port: int, *, allow_private: bool) -> Resolution:
    """Resolve ``host`` and check every address it resolves to; any refused address refuses
    the host (an attacker controls which record a client picks)."""
    odd = netguard.odd_numeric_form(host.lower())
    errors = [netguard.odd_form_error(host, odd)] if odd is not None else []
    if odd is None:
        # An address written in its standard form is what it resolves to: judged as it is,
        # without a round trip through the resolver's thread.
        with contextlib.suppress(ValueError):
            literal = ipaddress.ip_address(host)
            return Resolution(
                (literal,), netguard.address_errors(literal, allow_private=allow_private)
            )
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as exc:
        return Resolution((), [*errors, f"host {host!r} does not resolve ({exc})"])
    addresses: list[netguard.IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        address = ipaddress.ip_address(raw)
        if address not in addresses:
            addresses.append(address)
    for address in addresses:
        errors.extend(netguard.address_errors(address, allow_private=allow_private))
    return Resolution(tuple(addresses), errors)
