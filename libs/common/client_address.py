"""The caller's address as throttles see it: one bucket per IPv4 address, one per IPv6 /64
(a single host commonly holds a whole /64, so per-address IPv6 limits would be free to
evade), and which `X-Forwarded-For` entry is the client's behind trusted proxies."""

from __future__ import annotations

import ipaddress

__all__ = ["address_bucket", "forwarded_client"]


def address_bucket(address: str) -> str:
    """`203.0.113.7` → itself; `2001:db8:1:2:a:b:c:d` → `2001:db8:1:2::/64`. IPv4-mapped IPv6
    counts as its IPv4 address. Anything unparseable is returned as is."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def forwarded_client(header: str | None, peer: str, trusted_hops: int) -> str:
    """The client address when `trusted_hops` proxies we run sit in front of us. Each proxy
    appends the address it received the connection from, so the entry `trusted_hops` from
    the right is the one our outermost proxy saw; anything left of it is caller-supplied and
    may be forged. With no trusted proxy, or too few entries, the TCP peer is the client."""
    if trusted_hops <= 0 or not header:
        return peer
    entries = [e.strip() for e in header.split(",") if e.strip()]
    if len(entries) < trusted_hops:
        return peer
    candidate = entries[-trusted_hops]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return peer
    return candidate
