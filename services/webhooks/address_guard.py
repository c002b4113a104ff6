"""The SSRF guard: which addresses a webhook URL may reach, checked at create time and again,
on the resolved addresses, at every delivery (DNS can change between the two).

Only globally routable addresses are allowed: private, loopback, link-local (incl. the
169.254.169.254 metadata service), CGNAT, multicast, reserved and unspecified ranges are
refused, as are IPv4 addresses hidden in IPv6 (mapped, 6to4, NAT64 well-known prefix,
IPv4-compatible `::/96`, SIIT `::ffff:0:0:0/96`) and the local-use NAT64 (`64:ff9b:1::/48`)
and site-local (`fec0::/10`) prefixes, unless the operator lists the network in
`PM_WEBHOOKS_ALLOWED_NETWORKS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(ValueError):
    """The URL may not be used as a webhook endpoint; the message says why."""


@dataclass(frozen=True)
class ResolvedUrl:
    """A checked URL and the address to connect to (pinned, so DNS cannot change it)."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress


def parse_networks(raw: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in raw]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_REFUSED_TRANSITION = (
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): any IPv4 behind it
    ipaddress.ip_network("fec0::/10"),  # deprecated site-local: private by intent
)


def _transition_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | bool | None:
    """IPv6 transition forms `is_global` does not see through: the IPv4 address inside
    (IPv4-compatible `::/96`, SIIT `::ffff:0:0:0/96`), False for prefixes refused outright
    (local-use NAT64, site-local), None for anything else."""
    if any(ip in net for net in _REFUSED_TRANSITION):
        return False
    if ip in _IPV4_COMPATIBLE or ip in _SIIT:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    if any(ip.version == net.version and ip in net for net in allowed):
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_allowed(inner, allowed)
        transition = _transition_ipv4(ip)
        if isinstance(transition, ipaddress.IPv4Address):
            return address_allowed(transition, allowed)
        if transition is False:
            return False
    return ip.is_global and not ip.is_multicast


def check_url_syntax(url: str, *, allow_http: bool) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, else `UrlRefused`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("the URL is malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UrlRefused("the URL must use https")
    if scheme == "http" and not allow_http:
        raise UrlRefused(
            "the URL must use https (http is allowed only where PM_WEBHOOKS_ALLOW_HTTP=true:"
            " local development)"
        )
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not carry credentials")
    host = parts.hostname
    if not host:
        raise UrlRefused("the URL has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


async def resolve_url(url: str, *, allow_http: bool, allowed: Sequence[IPNetwork]) -> ResolvedUrl:
    """Check `url` and every address its host resolves to; the first address is pinned."""
    scheme, host, port = check_url_syntax(url, allow_http=allow_http)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlRefused(f"the host {host!r} does not resolve") from exc
        addresses = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise UrlRefused(f"the host {host!r} does not resolve")
    # Every address must pass: a host resolving to one public and one private address
    # would otherwise reach the private one on a later lookup.
    for ip in addresses:
        if not address_allowed(ip, allowed):
            raise UrlRefused(
                f"the URL resolves to a non-public address ({ip}); only networks listed in"
                " PM_WEBHOOKS_ALLOWED_NETWORKS may be reached"
            )
    return ResolvedUrl(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
