"""Webhook connections are pooled per (IP, port, SNI host) (issue 13): two endpoints whose
host names resolve to the same address never share a TLS connection, so a payload is only
ever sent over a session whose certificate was checked for its own host."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.webhooks.address_guard import ResolvedUrl
from services.webhooks.transport import WebhookTransport


def _certificates(tmp: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("a.example"), x509.DNSName("b.example")]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"


class TlsReceiver:
    """A keep-alive HTTPS endpoint on 127.0.0.1 recording each handshake's SNI name."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.handshakes: list[str | None] = []
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.context.sni_callback = lambda sock, name, ctx: self.handshakes.append(name)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[tuple[TlsReceiver, int, Path]]:
    ca, cert, key = _certificates(tmp_path)
    r = TlsReceiver(cert, key)
    server = await asyncio.start_server(r.serve, "127.0.0.1", 0, ssl=r.context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield r, port, ca
        server.close()


async def test_hosts_on_one_address_never_share_a_connection(
    receiver: tuple[TlsReceiver, int, Path],
) -> None:
    r, port, ca = receiver
    transport = WebhookTransport(
        timeout=5, body_limit=1024, verify=ssl.create_default_context(cafile=str(ca))
    )
    address = ipaddress.ip_address("127.0.0.1")

    def target(host: str) -> ResolvedUrl:
        return ResolvedUrl(f"https://{host}:{port}/hook", "https", host, port, address)

    try:
        for host in ("a.example", "a.example", "b.example", "b.example", "a.example"):
            result = await transport.send(target(host), {}, b"{}")
            assert result.succeeded, result.error
    finally:
        await transport.close()
    # One handshake per host name, each with its own SNI; same-host attempts reuse theirs.
    assert r.handshakes == ["a.example", "b.example"]
