"""DNS look-ups for domain verification, with dnspython against the configured resolvers
(`PM_DNS_RESOLVERS`: `host` or `host:port` entries; empty means the system's resolvers).

A missing name or record is an answer (an empty list); a resolver that cannot answer
(timeout, SERVFAIL) raises `DnsUnavailable`, so a DNS outage never marks records failed.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver


class DnsUnavailable(RuntimeError):
    """No resolver could answer; the records' state is unknown, not failed."""


def _nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    host, port = entry, 53
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif entry.count(":") == 1:
        host, _, raw = entry.partition(":")
        port = int(raw)
    return dns.nameserver.Do53Nameserver(host, port)


class DomainResolver:
    def __init__(self, resolvers: list[str], timeout: float = 5.0) -> None:
        if resolvers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [_nameserver(e) for e in resolvers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.cache = None  # every verification asks DNS now

    async def lookup(self, host: str, rtype: str) -> list[str]:
        """TXT: each record's strings joined; CNAME: the targets, without the final dot."""
        try:
            answer = await self._resolver.resolve(host, rtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsUnavailable(f"{host} {rtype}: {type(exc).__name__}") from exc
        if answer.rrset is None:
            return []
        if rtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]
        return [r.to_text().rstrip(".") for r in answer.rrset]
