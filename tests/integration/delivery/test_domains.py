"""Sending domains against the real delivery schema, OpenBao and outbox, a real authoritative
DNS server on loopback (dnslib) and a local fake of Cloudflare's DNS API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import dkim as dkimpy
import dns.resolver
import idna
import pytest

from libs.common.vault import Vault, make_client
from services.delivery.domains.dkim import DkimSigner
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.dns_server import FakeDns
from tests.fakes.smtp import FakeSmtp
from tests.integration.delivery.conftest import Harness

SCOPES = ("manage_domains", "send_email", "read_analytics")


def publish(dns: FakeDns, domain: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """Serve every record the API asked for from the test DNS server."""
    for record in domain["records"]:
        if record["purpose"] not in skip:
            dns.set(record["host"], record["type"], record["value"])


async def create(harness: Harness, name: str, tenant: str | None = None) -> Any:
    return await harness.client.post(
        "/api/v1/domains", json={"name": name}, headers=harness.headers(SCOPES, tenant=tenant)
    )


async def outbox_types(pool: asyncpg.Pool, domain_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_type FROM outbox WHERE payload->>'subject' = $1 ORDER BY created_at, id",
        domain_id,
    )
    return [r["event_type"] for r in rows]


@pytest.fixture
def vault(vault_dev: Any) -> Vault:
    return Vault(make_client(vault_dev.addr, token=vault_dev.token))


async def test_create_returns_records_and_keeps_the_private_key_in_vault_only(
    harness: Harness, delivery_pool: asyncpg.Pool, vault: Vault, unique: str
) -> None:
    r = await create(harness, f"Mail.{unique}.Example.com.")
    assert r.status_code == 201, r.text
    domain = r.json()["data"]
    name = f"mail.{unique}.example.com"
    assert domain["name"] == name and domain["status"] == "pending"
    by_purpose = {rec["purpose"]: rec for rec in domain["records"]}
    assert set(by_purpose) == {"dkim", "spf", "dmarc", "return_path", "tracking"}
    selector = domain["dkim_selector"]
    assert selector.startswith("pm" + datetime.now(UTC).strftime("%Y%m%d"))
    assert by_purpose["dkim"]["host"] == f"{selector}._domainkey.{name}"
    assert by_purpose["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert by_purpose["spf"] == {
        "purpose": "spf",
        "type": "TXT",
        "host": name,
        "value": "v=spf1 include:spf.penguinmails.com ~all",
        "required": True,
        "status": "pending",
    }
    assert by_purpose["dmarc"]["value"] == f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{name}"
    assert by_purpose["return_path"]["type"] == "CNAME"
    assert by_purpose["tracking"]["host"] == f"pm-track.{name}"

    secret = await vault.read(f"delivery/domains/{harness.tenant}/{domain['id']}/{selector}")
    assert secret is not None and secret["private_key"].startswith("-----BEGIN PRIVATE KEY")
    key_body = secret["private_key"].splitlines()[5]  # a line from the middle of the key
    assert key_body not in r.text
    dump = await delivery_pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM sending_domains t WHERE id = $1", domain["id"]
    )
    events = await delivery_pool.fetchval(
        "SELECT string_agg(payload::text, ' ') FROM outbox WHERE payload->>'subject' = $1",
        domain["id"],
    )
    assert key_body not in dump and key_body not in events
    assert "PRIVATE KEY" not in dump and "PRIVATE KEY" not in events

    got = await harness.client.get(
        f"/api/v1/domains/{domain['id']}", headers=harness.headers(SCOPES)
    )
    assert got.status_code == 200 and "PRIVATE" not in got.text
    listed = await harness.client.get("/api/v1/domains", headers=harness.headers(SCOPES))
    assert domain["id"] in [d["id"] for d in listed.json()["data"]]
    pending = await harness.client.get(
        "/api/v1/domains?status=pending", headers=harness.headers(SCOPES)
    )
    assert [d["id"] for d in pending.json()["data"]] == [domain["id"]]

    deleted = await harness.client.delete(
        f"/api/v1/domains/{domain['id']}", headers=harness.headers(SCOPES)
    )
    assert deleted.status_code == 204
    assert await vault.read(f"delivery/domains/{harness.tenant}/{domain['id']}/{selector}") is None
    assert await outbox_types(delivery_pool, domain["id"]) == ["domain.created", "domain.deleted"]


async def test_verify_then_a_removed_record_changes_health(
    harness: Harness, fake_dns: FakeDns, delivery_pool: asyncpg.Pool, unique: str
) -> None:
    domain = (await create(harness, f"{unique}.example.org")).json()["data"]
    path = f"/api/v1/domains/{domain['id']}/verify"

    nothing = await harness.client.post(path, headers=harness.headers(SCOPES))
    assert nothing.status_code == 200
    assert nothing.json()["data"]["status"] == "pending"
    statuses = {r["purpose"]: r["status"] for r in nothing.json()["data"]["records"]}
    assert set(statuses.values()) == {"failed"}

    publish(fake_dns, domain, skip=("return_path",))
    done = (await harness.client.post(path, headers=harness.headers(SCOPES))).json()["data"]
    assert done["status"] == "verified" and done["verified_at"]
    statuses = {r["purpose"]: r["status"] for r in done["records"]}
    assert statuses == {
        "dkim": "verified",
        "spf": "verified",
        "dmarc": "verified",
        "return_path": "failed",  # recommended, not required
        "tracking": "verified",
    }

    # The periodic checker finds the SPF record gone: failed, with a health alert.
    fake_dns.set(domain["name"], "TXT")
    await delivery_pool.execute(
        "UPDATE sending_domains SET next_check_at = now() WHERE id = $1", domain["id"]
    )
    while await harness.service.domains.check_due():
        pass
    after = (
        await harness.client.get(f"/api/v1/domains/{domain['id']}", headers=harness.headers(SCOPES))
    ).json()["data"]
    assert after["status"] == "failed"
    assert await outbox_types(delivery_pool, domain["id"]) == [
        "domain.created",
        "domain.verification_failed",  # the first, manual verify
        "domain.verified",
        "domain.health_changed",  # dkim, spf... from failed to verified
        "domain.verification_failed",
        "domain.health_changed",  # spf verified → failed
    ]
    change = await delivery_pool.fetchval(
        "SELECT payload->'data' FROM outbox WHERE payload->>'subject' = $1 AND event_type ="
        " 'domain.health_changed' ORDER BY created_at DESC, id DESC LIMIT 1",
        domain["id"],
    )
    assert change["status"] == "failed"
    assert change["changes"] == [
        {"purpose": "spf", "host": domain["name"], "previous": "verified", "current": "failed"}
    ]


async def test_dns_outage_changes_nothing(harness: Harness, fake_dns: FakeDns, unique: str) -> None:
    domain = (await create(harness, f"{unique}.example.net")).json()["data"]
    publish(fake_dns, domain)
    fake_dns.fail_next(*["SERVFAIL"] * 20)
    r = await harness.client.post(
        f"/api/v1/domains/{domain['id']}/verify", headers=harness.headers(SCOPES)
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "dns_unavailable"
    fake_dns.clear_failures()
    got = await harness.client.get(
        f"/api/v1/domains/{domain['id']}", headers=harness.headers(SCOPES)
    )
    assert got.json()["data"]["status"] == "pending"


async def test_bad_input_duplicates_and_other_tenants(
    harness: Harness, fake_dns: FakeDns, unique: str
) -> None:
    for bad in ["not a domain", "-bad-.com", "localhost", "a" * 64 + ".com", "x.123", ""]:
        r = await create(harness, bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] in ("invalid_domain", "validation_error"), bad
    idn = await create(harness, f"bücher-{unique}.example")
    assert idn.status_code == 201, idn.text
    assert idn.json()["data"]["name"] == idna.encode(f"bücher-{unique}.example").decode()
    assert idn.json()["data"]["name"].startswith("xn--")
    assert idn.json()["data"]["unicode_name"] == f"bücher-{unique}.example"

    name = f"shared-{unique}.example.com"
    first = (await create(harness, name)).json()["data"]
    again = await create(harness, name.upper())
    assert again.status_code == 409 and again.json()["error"]["code"] == "domain_exists"

    other = f"t_other_{unique}"
    pending_elsewhere = (await create(harness, name, tenant=other)).json()["data"]
    publish(fake_dns, first)
    verified = await harness.client.post(
        f"/api/v1/domains/{first['id']}/verify", headers=harness.headers(SCOPES)
    )
    assert verified.json()["data"]["status"] == "verified"
    # Once one tenant verified it, another can neither add it nor verify its own claim.
    taken = await create(harness, name, tenant=f"t_third_{unique}")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "domain_taken"
    publish(fake_dns, pending_elsewhere)
    claim = await harness.client.post(
        f"/api/v1/domains/{pending_elsewhere['id']}/verify",
        headers=harness.headers(SCOPES, tenant=other),
    )
    assert claim.status_code == 409 and claim.json()["error"]["code"] == "domain_taken"

    # Another tenant never sees or deletes this one's domain; the scope is required.
    for method in ("GET", "DELETE"):
        r = await harness.client.request(
            method, f"/api/v1/domains/{first['id']}", headers=harness.headers(SCOPES, tenant=other)
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "domain_not_found"
    no_scope = await harness.client.get("/api/v1/domains", headers=harness.headers(("send_email",)))
    assert no_scope.status_code == 403


async def test_default_sender_must_be_at_the_domain(harness: Harness, unique: str) -> None:
    domain = (await create(harness, f"{unique}.example.com")).json()["data"]
    path = f"/api/v1/domains/{domain['id']}"
    wrong = await harness.client.patch(
        path, json={"default_from": "ceo@bigbank-example.io"}, headers=harness.headers(SCOPES)
    )
    assert wrong.status_code == 422
    crlf = await harness.client.patch(
        path, json={"default_from_name": "Eve\r\nBcc: x@y.z"}, headers=harness.headers(SCOPES)
    )
    assert crlf.status_code == 422
    good = await harness.client.patch(
        path,
        json={"default_from": f"hello@{unique}.example.com", "default_from_name": "Acme"},
        headers=harness.headers(SCOPES),
    )
    assert good.status_code == 200, good.text
    assert good.json()["data"]["default_from"] == f"hello@{unique}.example.com"


async def test_rotation_signs_with_the_new_selector_while_the_old_record_exists(
    harness: Harness, fake_dns: FakeDns, vault: Vault, unique: str
) -> None:
    name = f"rot-{unique}.example.com"
    domain = (await create(harness, name)).json()["data"]
    publish(fake_dns, domain)
    path = f"/api/v1/domains/{domain['id']}"
    await harness.client.post(f"{path}/verify", headers=harness.headers(SCOPES))
    old = domain["dkim_selector"]

    signer = await harness.service.domains.signer_for(harness.tenant, f"a@{name}")
    assert signer is not None and signer.selector == old
    assert _verifies(signer.sign(_message(name)), fake_dns)

    rotated = await harness.client.post(f"{path}/rotate-dkim", headers=harness.headers(SCOPES))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]["dkim_next_selector"]
    assert new and new != old
    again = await harness.client.post(f"{path}/rotate-dkim", headers=harness.headers(SCOPES))
    assert again.json()["error"]["code"] == "dkim_rotation_in_progress"
    # Until the new record verifies, the old key keeps signing.
    pending = await harness.client.post(f"{path}/verify", headers=harness.headers(SCOPES))
    assert pending.json()["data"]["dkim_selector"] == old

    publish(fake_dns, rotated.json()["data"])  # the new record beside the old one
    done = (await harness.client.post(f"{path}/verify", headers=harness.headers(SCOPES))).json()
    assert done["data"]["dkim_selector"] == new and done["data"]["dkim_next_selector"] is None
    signer = await harness.service.domains.signer_for(harness.tenant, f"a@{name}")
    assert signer is not None and signer.selector == new
    assert fake_dns.get(f"{old}._domainkey.{name}", "TXT")  # old record still published
    assert _verifies(signer.sign(_message(name)), fake_dns)
    base = f"delivery/domains/{harness.tenant}/{domain['id']}"
    assert await vault.read(f"{base}/{old}") is None
    assert await vault.read(f"{base}/{new}") is not None


@pytest.fixture
def cloudflare(fake_dns: FakeDns) -> Iterator[FakeCloudflare]:
    cf = FakeCloudflare().serve_with(fake_dns)
    cf.start()
    yield cf
    cf.stop()


@pytest.mark.parametrize("harness", [{}], indirect=True)
async def test_publish_through_cloudflare_then_verify(
    harness: Harness, cloudflare: FakeCloudflare, fake_dns: FakeDns, unique: str
) -> None:
    harness.service.domains.settings = harness.service.settings.model_copy(
        update={"cloudflare_base_url": cloudflare.url}
    )
    zone = f"cf-{unique}.example.com"
    cloudflare.add_zone(zone)
    fake_dns.set(zone, "TXT", "v=spf1 include:_spf.google.com -all")
    domain = (await create(harness, f"mail.{zone}")).json()["data"]
    path = f"/api/v1/domains/{domain['id']}/publish"
    missing = await harness.client.post(path, headers=harness.headers(SCOPES))
    assert missing.status_code == 409
    assert missing.json()["error"]["code"] == "dns_provider_not_configured"

    # A token an HTTP header cannot carry is refused when stored (found by the contract
    # fuzz: publishing with it was a 500).
    for token in ("é" * 20, "token with spaces 0123456789", "line\nbreak-0123456789abc"):
        unsendable = await harness.client.put(
            "/api/v1/domains/dns-credentials",
            json={"provider": "cloudflare", "api_token": token},
            headers=harness.headers(SCOPES),
        )
        assert unsendable.status_code == 422, unsendable.text
        assert unsendable.json()["error"]["details"][0]["field"] == "body.api_token"
        assert token not in unsendable.text
    bad = await harness.client.put(
        "/api/v1/domains/dns-credentials",
        json={"provider": "cloudflare", "api_token": "wrong-token-0123456789abcdef"},
        headers=harness.headers(SCOPES),
    )
    assert bad.status_code == 204
    refused = await harness.client.post(path, headers=harness.headers(SCOPES))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "dns_provider_rejected"
    assert "wrong-token" not in refused.text

    await harness.client.put(
        "/api/v1/domains/dns-credentials",
        json={"api_token": cloudflare.token},
        headers=harness.headers(SCOPES),
    )
    published = await harness.client.post(path, headers=harness.headers(SCOPES))
    assert published.status_code == 200, published.text
    outcomes = {p["purpose"]: p["outcome"] for p in published.json()["data"]["published"]}
    assert set(outcomes.values()) == {"created"}
    assert cloudflare.requests()[-1].headers["authorization"] == f"Bearer {cloudflare.token}"
    verified = await harness.client.post(
        f"/api/v1/domains/{domain['id']}/verify", headers=harness.headers(SCOPES)
    )
    assert verified.json()["data"]["status"] == "verified"
    # Publishing again changes nothing.
    again = await harness.client.post(path, headers=harness.headers(SCOPES))
    assert {p["outcome"] for p in again.json()["data"]["published"]} == {"unchanged"}


async def test_smtp_mail_is_dkim_signed_with_the_verified_domain_key(
    harness: Harness, fake_dns: FakeDns, vault: Vault, creds_path: str
) -> None:
    smtp = FakeSmtp().start()
    try:
        await vault.write(
            f"{creds_path}/{harness.tenant}/smtp", {"host": "127.0.0.1", "port": smtp.port}
        )
        rule = await harness.client.post(
            "/api/v1/emails/routing-rules",
            json={"primary_provider": "smtp"},
            headers=harness.headers(),
        )
        assert rule.status_code == 201, rule.text
        await harness.send(to="bob@example.net", variables={"name": "Bob"})
        await harness.drain()
        assert len(smtp.raw) == 1
        raw = smtp.raw[0]
        assert raw.startswith(b"DKIM-Signature:")
        assert b"d=acme.example.com" in raw.split(b"\r\n\r\n")[0]
        assert _verifies(raw, fake_dns)
        # Tampering with the body breaks the signature (the check is real).
        assert not _verifies(raw.replace(b"Hi Bob", b"Hi Eve"), fake_dns)
    finally:
        smtp.stop()


def _message(domain: str) -> bytes:
    return (
        f"From: Ada <ada@{domain}>\r\nTo: bob@example.net\r\nSubject: Hello\r\n"
        f"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@{domain}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi Bob!\r\n"
    ).encode()


def _verifies(message: bytes, fake_dns: FakeDns) -> bool:
    """dkimpy's verifier, fetching the key record from the test DNS server over DNS."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = fake_dns.port

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return bool(dkimpy.verify(message, dnsfunc=dnsfunc))


def test_dkim_signature_covers_the_headers_present() -> None:
    from services.delivery.domains.dkim import generate_key_pair

    pair = generate_key_pair()
    signed = DkimSigner("example.com", pair.selector, pair.private_pem).sign(
        _message("example.com")
    )
    header = signed.split(b"\r\n\r\n")[0].decode()
    assert header.startswith("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert "d=example.com" in header and f"s={pair.selector}" in header


async def test_live_sends_only_from_verified_domains_test_mode_exempt(
    harness: Harness, fake_dns: FakeDns, unique: str
) -> None:
    body = {
        "to": "bob@example.net",
        "subject": "Hi",
        "text": "Hello",
        "from": f"ceo@bigbank-{unique}.example",
    }
    send, bulk = "/api/v1/emails/send", "/api/v1/emails/send-bulk"
    bulk_body = {**body, "recipients": [{"email": "bob@example.net"}]}
    bulk_body.pop("to")
    for path, payload in ((send, body), (bulk, bulk_body)):
        refused = await harness.client.post(path, json=payload, headers=harness.headers())
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "sender_domain_not_verified"
        assert f"bigbank-{unique}.example" in error["message"]
        assert error["details"][0]["field"] == "body.from"
        # Test mode is exempt.
        test = await harness.client.post(path, json=payload, headers=harness.headers(mode="test"))
        assert test.status_code == 202, test.text

    # Verified by another tenant: still refused for this one.
    other = f"t_owner_{unique}"
    domain = (await create(harness, f"bigbank-{unique}.example", tenant=other)).json()["data"]
    publish(fake_dns, domain)
    await harness.client.post(
        f"/api/v1/domains/{domain['id']}/verify", headers=harness.headers(SCOPES, tenant=other)
    )
    again = await harness.client.post(send, json=body, headers=harness.headers())
    assert again.json()["error"]["code"] == "sender_domain_not_verified"
    # The owner's live send is accepted, also From a subdomain of the verified domain.
    owner = harness.headers(tenant=other)
    assert (await harness.client.post(send, json=body, headers=owner)).status_code == 202
    sub = {**body, "from": f"News <news@mail.bigbank-{unique}.example>"}
    assert (await harness.client.post(send, json=sub, headers=owner)).status_code == 202


async def test_two_tenants_verifying_one_name_at_once_one_wins_the_other_gets_409(
    harness: Harness, fake_dns: FakeDns, delivery_pool: asyncpg.Pool, unique: str
) -> None:
    name = f"race-{unique}.example.com"
    a = (await create(harness, name)).json()["data"]
    other = f"t_race_{unique}"
    b = (await create(harness, name, tenant=other)).json()["data"]
    publish(fake_dns, b)
    # Tenant A's verification is in a transaction that has not committed yet: B's check
    # cannot see it, and B's write waits on the unique index until A commits.
    async with delivery_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE sending_domains SET status = 'verified' WHERE id = $1", a["id"])
        verify_b = asyncio.create_task(
            harness.client.post(
                f"/api/v1/domains/{b['id']}/verify", headers=harness.headers(SCOPES, tenant=other)
            )
        )
        await asyncio.sleep(1.0)
        await tx.commit()
    r = await verify_b
    assert r.status_code == 409 and r.json()["error"]["code"] == "domain_taken", r.text
    got = await harness.client.get(
        f"/api/v1/domains/{b['id']}", headers=harness.headers(SCOPES, tenant=other)
    )
    assert got.json()["data"]["status"] == "pending"
