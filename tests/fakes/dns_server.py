"""A real authoritative DNS server on loopback (dnslib), holding the records a test
publishes: the resolver under test (dnspython, `PM_DNS_RESOLVERS=127.0.0.1:<port>`) asks it
over UDP and TCP exactly as it asks public DNS.

Names it holds no record for answer NXDOMAIN; a name with records of another type answers
NOERROR with no answer (NODATA), as a real zone does. `fail_next("SERVFAIL")` scripts an
outage. Run alone: `python -m tests.fakes.dns_server --port N`.
"""

from __future__ import annotations

import argparse
import errno
import socket
import threading
import time
from typing import Any

from dnslib import CNAME, QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def _txt_chunks(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


class FakeDns(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], list[str]] = {}
        self._failures: list[str] = []
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._servers: list[DNSServer] = []

    # -- what tests use
    def set(self, host: str, rtype: str, *values: str) -> None:
        """Replace the `rtype` records of `host` (no values: remove them)."""
        key = (host.rstrip(".").lower(), rtype.upper())
        with self._lock:
            if values:
                self._records[key] = list(values)
            else:
                self._records.pop(key, None)

    def get(self, host: str, rtype: str) -> list[str]:
        with self._lock:
            return list(self._records.get((host.rstrip(".").lower(), rtype.upper()), []))

    def fail_next(self, *rcodes: str) -> None:
        with self._lock:
            self._failures.extend(rcodes)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- dnslib
    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        reply.header.aa = 1
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self._lock:
            self.queries.append((qname, qtype))
            if self._failures:
                reply.header.rcode = getattr(RCODE, self._failures.pop(0))
                return reply
            values = list(self._records.get((qname, qtype), []))
            known = any(name == qname for name, _ in self._records)
        for value in values:
            if qtype == "TXT":
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(_txt_chunks(value)), ttl=60))
            elif qtype == "CNAME":
                reply.add_answer(RR(qname, QTYPE.CNAME, rdata=CNAME(value + "."), ttl=60))
        if not values and not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def start(self, port: int = 0) -> FakeDns:
        """Serve UDP and TCP on `port`, or on a free port: the kernel picks a free UDP port,
        whose TCP twin may be taken (an outgoing connection's port, say); then another."""
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for _ in range(1 if port else 20):
            chosen = port or _free_udp_port()
            try:
                for tcp in (False, True):
                    server = DNSServer(
                        self, port=chosen, address="127.0.0.1", tcp=tcp, logger=quiet
                    )
                    server.start_thread()
                    self._servers.append(server)
            except OSError as exc:
                self.stop()
                if port or exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self.port = chosen
            break
        else:
            raise RuntimeError("no free port for the fake DNS server (UDP and TCP)")
        deadline = time.monotonic() + 5
        while not all(s.isAlive() for s in self._servers):
            if time.monotonic() > deadline:
                raise RuntimeError("fake DNS server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        self._servers.clear()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.dns_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    dns = FakeDns().start(args.port)
    print(f"fake DNS on {dns.address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        dns.stop()
