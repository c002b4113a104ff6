"""Fair claiming across tenants: a small tenant's accept -> sent latency while another
tenant's 100,000-recipient bulk send drains, against the same small tenant's latency on an
idle system, measured in the same run.

Real `python -m services.delivery api|relay|worker|express` processes (one worker, one express
lane: docs/sending.md "Send lanes") in a database
and vhost of their own (`pm_bench_<pid>`), a local fake Mailgun (provider rate limit lifted:
this measures the pipeline's order, not the provider's pace). Callers are signed principals
(the gateway's part is measured by bench/gateway.py): the big tenant on the internal
`unlimited` plan, the small one on `pro`; each has a verified sending domain.

1. idle: the small tenant sends K single emails, one every INTERVAL seconds; latency = from
   the accept (the message's `created_at`) to sent (its timeline's `sent` entry, written
   when the provider accepted it).
2. busy: the big tenant sends N recipients (bulk calls of 10,000, batch_size 1,000); once
   they are accepted, while they drain, the small tenant sends K emails as in 1.

Prints both p50/p95/p99, busy p99 / idle p99 (target <= 2x, issue 13) and the bulk's drain
time (throughput), the lanes the small sends were accepted into, and where their time went:
accept -> their send command published by the outbox relay, and published -> sent (negative:
sent before its own command was out: by the express lane, whose messages' command is the
workers' takeover `PM_EXPRESS_TAKEOVER_SECONDS` later, or by another command's fair claim).
BENCH_FAIRNESS_EXPRESS_MAX_RECIPIENTS=0 turns the express lane off (the workers alone, as
before it existed). BENCH_FAIRNESS_SMALL_PROVIDER=postmark: the small tenant's sends are
transactional, routed (the platform's default route) to a fake Postmark in a process of its
own, so the provider call does not wait behind the fake Mailgun parsing a 1,000-recipient
request of the bulk in the bench's process (a real provider answers customers in parallel);
default `mailgun`: everything through the one in-process fake Mailgun, as the bench always
measured.
Run: `uv run python -m bench.fairness` (needs the OpenBao dev server of `make infra`);
BENCH_FAIRNESS_N (default 100000), BENCH_FAIRNESS_K (default 40); the worker's settings:
BENCH_FAIRNESS_CLAIM_LIMIT (200), BENCH_FAIRNESS_CLAIM_LIMIT_ALONE (1000),
BENCH_FAIRNESS_PREFETCH (32), BENCH_FAIRNESS_SEND_CONCURRENCY (2),
BENCH_FAIRNESS_EXPRESS_MAX_RECIPIENTS (10); BENCH_FAIRNESS_PROCESS_NICE (unset: each kind's
niceness as deployed; 0: the worker and relay at the express lane's priority).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import asyncpg
import httpx
import orjson

from bench.harness import (
    REPO,
    VAULT_ADDR,
    free_port,
    fresh_database,
    fresh_vhost,
    percentile,
    service_dsn,
    spawn,
    stop,
    summary,
    wait_ready,
)
from libs.common.principal import PRINCIPAL_HEADER, Principal, sign_principal
from libs.common.signing_keys import generate_private_key, public_keys_of
from libs.common.vault import Vault, make_client
from tests.fakes.dns_server import FakeDns
from tests.fakes.mailgun import FakeMailgun

N = int(os.environ.get("BENCH_FAIRNESS_N", "100000"))
K = int(os.environ.get("BENCH_FAIRNESS_K", "40"))
INTERVAL = 0.25
CLAIM_LIMIT = os.environ.get("BENCH_FAIRNESS_CLAIM_LIMIT", "200")  # PM_CLAIM_LIMIT's default
# PM_CLAIM_LIMIT_ALONE's default: the claim size while one tenant alone has queued messages.
CLAIM_LIMIT_ALONE = os.environ.get("BENCH_FAIRNESS_CLAIM_LIMIT_ALONE", "1000")
PREFETCH = os.environ.get("BENCH_FAIRNESS_PREFETCH", "32")  # PM_CONSUMER_PREFETCH's default
SLOTS = os.environ.get("BENCH_FAIRNESS_SEND_CONCURRENCY", "2")  # PM_SEND_CONCURRENCY's default
# PM_EXPRESS_MAX_RECIPIENTS's default; 0: no express lane.
EXPRESS = os.environ.get("BENCH_FAIRNESS_EXPRESS_MAX_RECIPIENTS", "10")
SMALL_PROVIDER = os.environ.get("BENCH_FAIRNESS_SMALL_PROVIDER", "mailgun")
assert SMALL_PROVIDER in ("mailgun", "postmark"), SMALL_PROVIDER
# The processes' niceness; unset: each kind's, as deployed (docs/scheduling.md "CPU
# priority": the worker and relay at +10, api and express at 0); 0: all at the same.
NICE = os.environ.get("BENCH_FAIRNESS_PROCESS_NICE", "")
POSTMARK_TOKEN = "pm-server-token"  # the standalone fake's (tests/fakes/postmark.py)
PER_CALL = 10_000
BATCH_SIZE = 1000
PRINCIPAL_KEY = generate_private_key()
# When the provider accepted a message: its row's `sent_at` (migration 000315), else (sent
# before it) its timeline's `sent` row.
SENT = (
    "coalesce(m.sent_at, (SELECT e.occurred_at FROM delivery.message_events e"
    " WHERE e.message_id = m.id AND e.status = 'sent' LIMIT 1))"
)
BIG = "big.example.org"
SCOPES = ["send_email", "read_analytics", "manage_domains"]


class Caller:
    def __init__(self, client: httpx.AsyncClient, base: str, tenant: str, plan: str) -> None:
        self.client, self.base = client, base
        self.principal = Principal(
            tenant_id=tenant,
            subject_type="api_key",
            subject_id=f"key_{tenant}",
            scopes=SCOPES,
            plan=plan,
            mode="live",
        )

    async def post(self, path: str, body: Any) -> httpx.Response:
        token = sign_principal(
            self.principal, PRINCIPAL_KEY, 300, audience="delivery", method="POST", path=path
        )
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        r = await self.client.post(
            self.base + path,
            content=content,
            headers={PRINCIPAL_HEADER: token, "Content-Type": "application/json"},
        )
        r.raise_for_status()
        return r

    async def verify_domain(self, dns: FakeDns, name: str) -> None:
        domain = (await self.post("/api/v1/domains", {"name": name})).json()["data"]
        for record in domain["records"]:
            dns.set(record["host"], record["type"], record["value"])
        verified = await self.post(f"/api/v1/domains/{domain['id']}/verify", {})
        assert verified.json()["data"]["status"] == "verified", verified.text


async def small_sends(
    small: Caller, db: asyncpg.Connection, tag: str, busy: Any = None
) -> list[float]:
    """K single sends, one every INTERVAL s; accept -> sent latencies (seconds): from the
    accept transaction's `created_at` to the `sent` entry of the message's timeline (both
    in the database: the measurement adds no work to the processes measured)."""
    ids: list[str] = []
    for i in range(K):
        if busy is not None and not await busy():
            break  # the bulk has drained: later sends would measure an idle system
        r = await small.post(
            "/api/v1/emails/send",
            {
                "to": f"{tag}{i}@small.example.org",
                "from": "hi@small.example.com",
                "category": "marketing" if SMALL_PROVIDER == "mailgun" else "transactional",
                "subject": "Hi",
                "text": "Hello",
            },
        )
        ids.append(r.json()["data"]["message_id"])
        await asyncio.sleep(INTERVAL)
    deadline = time.monotonic() + 600
    while True:
        rows = await db.fetch(
            f"SELECT m.id, extract(epoch FROM {SENT} - m.created_at) AS latency"
            f" FROM delivery.messages m WHERE m.id = ANY($1::text[]) AND {SENT} IS NOT NULL",
            ids,
        )
        if len(rows) == len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if len(rows) < len(ids):
        raise RuntimeError(f"{len(ids) - len(rows)} small-tenant emails never sent")
    # Where the time went: accept -> its send command published by the relay (and on which
    # queue), -> sent.
    parts = await db.fetch(
        "SELECT o.routing_key, extract(epoch FROM o.published_at - m.created_at) AS relay,"
        f" extract(epoch FROM {SENT} - o.published_at) AS worker"
        " FROM delivery.messages m JOIN delivery.outbox o ON o.exchange IS NOT NULL"
        " AND o.payload::jsonb->'data'->'message_ids' ? m.id WHERE m.id = ANY($1::text[])"
        f" AND {SENT} IS NOT NULL",
        ids,
    )
    if EXPRESS != "0":  # (main's code, measured with the lane off, has no lanes)
        lanes = await db.fetch(
            "SELECT lane, count(*) AS n FROM delivery.messages WHERE id = ANY($1::text[])"
            " GROUP BY lane ORDER BY lane",
            ids,
        )
        print(f"  [{tag}] lanes: " + ", ".join(f"{r['lane']} {r['n']}" for r in lanes))
    if parts:
        queues = sorted({str(p["routing_key"]) for p in parts})
        relay = [float(p["relay"]) for p in parts if p["relay"] is not None]
        worker = [float(p["worker"]) for p in parts if p["worker"] is not None]
        print(f"  [{tag}] commands on {queues}; accept -> command published: {summary(relay)};"
              f" published -> sent: {summary(worker)}")  # fmt: skip
    return [float(r["latency"]) for r in rows]


async def postmark_ready(url: str) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(600):
            try:
                r = await client.get(
                    url + "/server", headers={"X-Postmark-Server-Token": POSTMARK_TOKEN}
                )
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"fake Postmark at {url} not ready")


async def main() -> None:
    await fresh_database("delivery")
    amqp_url = fresh_vhost()
    token = (REPO / ".dev" / "vault-root-token").read_text().strip()
    vault = Vault(make_client(VAULT_ADDR, token=token))
    creds_path = f"bench-fairness/{uuid.uuid4().hex[:8]}"
    fake = FakeMailgun().start()
    dns = FakeDns().start()
    await vault.write(f"{creds_path}/platform/mailgun", {"api_key": fake.api_key})
    await vault.write(f"{creds_path}/platform/postmark", {"server_token": POSTMARK_TOKEN})
    postmark_port = free_port()
    small_route = ["mailgun"] if SMALL_PROVIDER == "mailgun" else ["postmark"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env.update(
        PM_ENVIRONMENT="test", PM_DATABASE_URL=service_dsn("delivery"), PM_AMQP_URL=amqp_url,
        PM_VAULT_ADDR=VAULT_ADDR, PM_VAULT_TOKEN=token, PM_LOG_LEVEL="WARNING",
        PM_PRINCIPAL_PUBLIC_KEYS=public_keys_of(PRINCIPAL_KEY), PM_FORCE_SANDBOX="false",
        PM_TRACKING_SIGNING_KEY="bench-tracking-key-0123456789abcdef-0123456789",
        PM_ESP_CREDENTIALS_PATH=f"{creds_path}/platform",
        PM_TENANT_CREDENTIALS_PATH=f"{creds_path}/tenants",
        PM_MAILGUN_BASE_URL=fake.url,
        PM_PROVIDER_LIMITS=json.dumps(
            {"mailgun": [1_000_000, 1_000_000], "postmark": [1_000_000, 1_000_000]}
        ),
        PM_DEFAULT_ROUTES=json.dumps({"marketing": ["mailgun"], "transactional": small_route}),
        PM_POSTMARK_BASE_URL=f"http://127.0.0.1:{postmark_port}",
        PM_DNS_RESOLVERS=dns.address, PYTHONPATH=str(REPO),
        PM_CLAIM_LIMIT=CLAIM_LIMIT, PM_CLAIM_LIMIT_ALONE=CLAIM_LIMIT_ALONE,
        PM_CONSUMER_PREFETCH=PREFETCH, PM_SEND_CONCURRENCY=SLOTS,
        PM_EXPRESS_MAX_RECIPIENTS=EXPRESS, **({"PM_PROCESS_NICE": NICE} if NICE else {}),
    )  # fmt: skip
    # The lane off: no express process (also how main's code, which has none, is measured).
    kinds = ("api", "relay", "worker") + (("express",) if EXPRESS != "0" else ())
    ports = {p: free_port() for p in kinds}
    procs = [
        spawn(["-m", "services.delivery", p], {**env, "PM_HTTP_PORT": str(port)}, f"fair-{p}")
        for p, port in ports.items()
    ]
    if SMALL_PROVIDER == "postmark":
        procs.append(
            spawn(
                ["-m", "tests.fakes.postmark", "--port", str(postmark_port)], env, "fair-postmark"
            )
        )
    try:
        for port in ports.values():
            wait_ready(f"http://127.0.0.1:{port}")
        if SMALL_PROVIDER == "postmark":
            await postmark_ready(f"http://127.0.0.1:{postmark_port}")
        async with httpx.AsyncClient(timeout=300) as client:
            base = f"http://127.0.0.1:{ports['api']}"
            big = Caller(client, base, f"t_big_{uuid.uuid4().hex[:8]}", "unlimited")
            small = Caller(client, base, f"t_small_{uuid.uuid4().hex[:8]}", "pro")
            await big.verify_domain(dns, "big.example.com")
            await small.verify_domain(dns, "small.example.com")

            db = await asyncpg.connect(service_dsn("delivery"))
            idle = await small_sends(small, db, "idle")

            bodies = [
                orjson.dumps(
                    {
                        "from": "news@big.example.com",
                        "subject": "Hello {{ name }}",
                        "html": "<p>Hi {{ name }}</p>",
                        "batch_size": BATCH_SIZE,
                        "recipients": [
                            {"email": f"r{i}@big.example.org", "personalization": {"name": f"R{i}"}}
                            for i in range(lo, min(N, lo + PER_CALL))
                        ],
                    }
                )
                for lo in range(0, N, PER_CALL)
            ]
            started = time.time()
            for body in bodies:
                await big.post("/api/v1/emails/send-bulk", body)
            accepted = time.time() - started

            def big_arrived() -> int:
                # Requests carry one tenant's recipients: count by the first (cheap).
                return sum(
                    len(r.recipients)
                    for r in fake.requests()
                    if r.recipients and r.recipients[0].endswith(BIG)
                )

            async def draining() -> bool:
                return big_arrived() < N

            at_start = big_arrived()
            busy = await small_sends(small, db, "busy", busy=draining)
            at_end = big_arrived()
            while big_arrived() < N:
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"a delivery process exited ({p.args})")
                await asyncio.sleep(0.5)
            drained = time.time() - started
            await db.close()
    finally:
        stop(procs)
        fake.stop()
        dns.stop()
        await vault.delete(f"{creds_path}/platform/mailgun")
        await vault.delete(f"{creds_path}/platform/postmark")

    ratio = percentile(busy, 99) / percentile(idle, 99)
    print(f"bench/fairness.py  big tenant: {N:,} recipients ({len(bodies)} bulk calls of "
          f"{PER_CALL:,}, batch_size {BATCH_SIZE}); small tenant: {K} single sends, one per "
          f"{INTERVAL} s; one worker, claim limit {CLAIM_LIMIT} ({CLAIM_LIMIT_ALONE} alone), "
          f"prefetch {PREFETCH}, send slots {SLOTS}; express lane: sends of at most {EXPRESS} "
          f"recipients (0: off); the small tenant's provider: {SMALL_PROVIDER}; worker and relay"
          f" at nice +{NICE or '10 (as deployed)'}")  # fmt: skip
    print(f"  big bulk accepted in {accepted:.1f} s, drained (last provider request) after "
          f"{drained:.1f} s")  # fmt: skip
    print(f"  small tenant, idle system:        {summary(idle)}  ({len(idle)} sends)")
    print(f"  small tenant, while bulk drains:  {summary(busy)}  ({len(busy)} sends, while the"
          f" big tenant's arrivals went {at_start:,} -> {at_end:,} of {N:,})")  # fmt: skip
    status = "OK" if ratio <= 2 else "ABOVE TARGET"
    print(f"  idle p99 {percentile(idle, 99):.3f} s, busy p99 {percentile(busy, 99):.3f} s, "
          f"busy p99 / idle p99: {ratio:.2f}x (target <= 2x) {status}; bulk drain "
          f"{drained:.1f} s")  # fmt: skip
    print(
        orjson.dumps(
            {
                "idle_p99": percentile(idle, 99),
                "busy_p99": percentile(busy, 99),
                "ratio": ratio,
                "busy_sends": len(busy),
                "drain_seconds": drained,
            }
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
