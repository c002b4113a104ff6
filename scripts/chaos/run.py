# ruff: noqa: S603  (a drill: runs the repository's own commands, prints its table)
"""`make chaos`: faults under load on private servers; prints one table.

1. Starts private PostgreSQL, Redis, RabbitMQ and OpenBao (`scripts/chaos/instances.py`) in a
   temporary directory, and the whole platform against them with the dev stack's own code
   (`python -m scripts.dev.stack up` as a separate instance: PM_DEV_DIR, PM_DEV_PORT_OFFSET),
   under supervisord, which restarts a killed process (`autorestart=true`).
2. Signs up a tenant, makes a live API key, verifies a sending domain through a local DNS
   server (`tests/fakes/dns_server.py`), registers a webhook for `contact.created` at a local
   receiver (`tests/fakes/webhook_receiver.py`).
3. Keeps a steady, bounded load on the gateway: contacts created (each one a webhook event),
   single sends and bulk sends (live mail goes over SMTP to the stack's mail capture, the
   local stand-in for the ESP), contact lists; and a campaign (`--campaign-recipients`
   inline recipients, spaced 1-2 s apart by the campaign runner) started before the first
   fault, so its sends run through the kills and restarts.
4. Faults, each while loaded: `kill -9` of every supervisord program in turn, then RabbitMQ,
   PostgreSQL, Redis and OpenBao each stopped for `--outage` seconds and started again
   (OpenBao comes back sealed and is unsealed).
5. Prints per fault: requests served / failed by status, time to recover; then mail accepted
   vs captured (lost, duplicated), the campaign's recipients vs captured (lost, duplicated,
   how many were sent before, during and after the faults), webhook events vs deliveries
   (lost, duplicated as new ids), outbox rows left unpublished, dead-letter depth.

Only 127.0.0.1 is contacted; the machine's shared servers are never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from libs.common.settings import SERVICE_NAMES
from scripts.chaos.instances import ROOT, PrivateInfra
from tests.fakes.dns_server import FakeDns
from tests.fakes.webhook_receiver import WebhookReceiver

DOMAIN = "chaos.example.com"
RCPT_DOMAIN = "rcpt.chaos.example.net"
CAMPAIGN_DOMAIN = "campaign.chaos.example.org"  # apart from the load's recipients
PRO_PER_MINUTE = 300  # services/gateway/ratelimit.py; the load stays under it


@dataclass
class Sample:
    at: float
    op: str
    status: str  # HTTP status, or "conn" when no answer came


@dataclass
class Load:
    """The load's record: every request's outcome, recipients accepted, contacts created."""

    samples: list[Sample] = field(default_factory=list)
    accepted_rcpts: set[str] = field(default_factory=set)
    attempted_rcpts: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)
    counter: int = 0


@dataclass
class FaultRow:
    name: str
    started: float
    ended: float = 0.0
    recovered: float | None = None
    note: str = ""


def start_dns() -> FakeDns:
    """The local DNS server; its UDP port's TCP twin may be taken: try another port."""
    for attempt in range(5):
        try:
            return FakeDns().start()
        except OSError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def stack_cmd(env: dict[str, str], command: str, timeout: float = 900) -> int:
    return subprocess.run(
        [sys.executable, "-m", "scripts.dev.stack", command],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        check=False,
    ).returncode


async def request(
    client: httpx.AsyncClient, load: Load, op: str, method: str, url: str, **kw: Any
) -> httpx.Response | None:
    try:
        r = await client.request(method, url, **kw)
        load.samples.append(Sample(time.monotonic(), op, str(r.status_code)))
        return r
    except httpx.HTTPError:
        load.samples.append(Sample(time.monotonic(), op, "conn"))
        return None


async def worker(
    client: httpx.AsyncClient,
    base: str,
    key: str,
    load: Load,
    stop: asyncio.Event,
    limit: int,
    pause: float,
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    while not stop.is_set() and load.counter < limit:
        load.counter += 1
        n = load.counter
        kind = n % 8
        if kind in (0, 4):
            email = f"c{n}@{RCPT_DOMAIN}"
            r = await request(
                client,
                load,
                "contact",
                "POST",
                f"{base}/api/v1/contacts",
                json={"email": email},
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            if r is not None and r.status_code == 201:
                load.contacts.add(email)
        elif kind in (1, 3, 5):
            rcpt = f"s{n}@{RCPT_DOMAIN}"
            load.attempted_rcpts.add(rcpt)
            body: dict[str, Any] = {
                "from": f"load@{DOMAIN}",
                "to": rcpt,
                "subject": f"chaos {n}",
                "text": "hello",
                "category": "transactional",
            }
            r = await request(
                client,
                load,
                "send",
                "POST",
                f"{base}/api/v1/emails/send",
                json=body,
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            if r is not None and r.is_success:
                load.accepted_rcpts.add(rcpt)
        elif kind == 7:
            rcpts = [f"b{n}x{i}@{RCPT_DOMAIN}" for i in range(5)]
            load.attempted_rcpts.update(rcpts)
            body = {
                "from": f"load@{DOMAIN}",
                "subject": f"bulk {n}",
                "text": "hi",
                "recipients": [{"email": e} for e in rcpts],
            }
            r = await request(
                client,
                load,
                "bulk",
                "POST",
                f"{base}/api/v1/emails/send-bulk",
                json=body,
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            if r is not None and r.is_success:
                load.accepted_rcpts.update(rcpts)
        else:
            await request(
                client, load, "list", "GET", f"{base}/api/v1/contacts?limit=5", headers=auth
            )
        await asyncio.sleep(pause)


async def setup_tenant(client: httpx.AsyncClient, base: str, dns: FakeDns, hook_url: str) -> str:
    r = await client.post(
        f"{base}/api/v1/auth/signup",
        json={
            "email": f"chaos-{uuid.uuid4().hex[:8]}@example.com",
            "password": "a-long-chaos-passphrase",
            "company": "Chaos",
        },
    )
    r.raise_for_status()
    jwt = {"Authorization": f"Bearer {r.json()['data']['access_token']}"}
    scopes = [
        "send_email",
        "manage_contacts",
        "manage_webhooks",
        "manage_domains",
        "manage_campaigns",
        "read_analytics",
    ]
    r = await client.post(
        f"{base}/api/v1/platform/api-keys",
        headers=jwt,
        json={"name": "chaos", "mode": "live", "scopes": scopes},
    )
    r.raise_for_status()
    key = str(r.json()["data"]["key"])
    auth = {"Authorization": f"Bearer {key}"}
    r = await client.post(f"{base}/api/v1/domains", json={"name": DOMAIN}, headers=auth)
    r.raise_for_status()
    domain = r.json()["data"]
    for record in domain["records"]:
        dns.set(record["host"], record["type"], record["value"])
    r = await client.post(f"{base}/api/v1/domains/{domain['id']}/verify", headers=auth)
    if r.json()["data"]["status"] != "verified":
        raise RuntimeError(f"sending domain not verified: {r.text}")
    r = await client.post(
        f"{base}/api/v1/webhooks",
        headers=auth,
        json={"url": hook_url, "events": ["contact.created"]},
    )
    r.raise_for_status()
    await upgrade_to_pro(client, base, jwt, auth)
    return key


async def upgrade_to_pro(
    client: httpx.AsyncClient, base: str, jwt: dict[str, str], auth: dict[str, str]
) -> None:
    """The starter plan allows 60 requests a minute: buy `pro` (300) on the fake Stripe,
    as docs/getting-started.md step 5 does, so the load is not mostly 429s."""
    r = await client.post(
        f"{base}/api/v1/billing/checkout-sessions", headers=jwt, json={"plan_id": "pro"}
    )
    r.raise_for_status()
    paid = await client.post(r.json()["data"]["url"])
    if paid.status_code != 303:
        raise RuntimeError(f"fake Stripe checkout: {paid.status_code} {paid.text[:200]}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = await client.get(f"{base}/api/v1/contacts?limit=1", headers=auth)
        if r.headers.get("X-RateLimit-Limit") == str(PRO_PER_MINUTE):
            return
        await asyncio.sleep(1)
    raise RuntimeError("the plan change to pro did not reach the gateway in 90 s")


@dataclass
class CampaignRun:
    """The campaign sent during the drill: its recipients and how far it got when."""

    id: str
    recipients: set[str]
    sent_at: dict[str, int] = field(default_factory=dict)  # moment -> recipients captured
    status: str = ""

    def captured(self, mails: list[Any]) -> Counter[str]:
        return Counter(r for m in mails for r in m.rcpt_to if r in self.recipients)


async def start_campaign(client: httpx.AsyncClient, base: str, key: str, n: int) -> CampaignRun:
    """A one-step campaign to `n` inline recipients, one send every 1-2 s (the runner's
    spacing): it is still sending while the faults happen."""
    auth = {"Authorization": f"Bearer {key}"}
    rcpts = [f"camp{i}-{uuid.uuid4().hex[:6]}@{CAMPAIGN_DOMAIN}" for i in range(n)]
    r = await client.post(
        f"{base}/api/v1/campaigns",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={
            "name": "chaos campaign",
            "from_email": f"campaign@{DOMAIN}",
            "subject": "Chaos campaign",
            "content": {"text": "Hello from the chaos drill"},
            "recipients": [{"email": e} for e in rcpts],
            "settings": {"track_opens": False, "track_clicks": False},
            "spacing": {"min_seconds": 1, "max_seconds": 2},
        },
        timeout=120,
    )
    if r.status_code != 201:
        raise RuntimeError(f"campaign not created: {r.status_code} {r.text[:300]}")
    cid = str(r.json()["data"]["id"])
    r = await client.post(f"{base}/api/v1/campaigns/{cid}/start", headers=auth, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"campaign not started: {r.status_code} {r.text[:300]}")
    return CampaignRun(cid, set(rcpts))


async def campaign_status(client: httpx.AsyncClient, base: str, key: str, cid: str) -> str:
    try:
        r = await client.get(
            f"{base}/api/v1/campaigns/{cid}", headers={"Authorization": f"Bearer {key}"}
        )
    except httpx.HTTPError:
        return "?"
    return str(r.json()["data"]["status"]) if r.status_code == 200 else f"HTTP {r.status_code}"


def supervisor() -> Any:
    from scripts.dev import stack

    return stack.supervisor_rpc()


def program_port(name: str) -> int:
    from scripts.dev import stack

    svc, _, proc = name.partition("-")
    return stack.port_of(svc, proc)


async def ready(client: httpx.AsyncClient, port: int) -> bool:
    try:
        return (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).status_code == 200
    except httpx.HTTPError:
        return False


async def probe_ok(client: httpx.AsyncClient, base: str, key: str) -> bool:
    try:
        r = await client.get(
            f"{base}/api/v1/contacts?limit=1", headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200


async def until(check: Any, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return None


async def kill_program(client: httpx.AsyncClient, name: str, row: FaultRow) -> None:
    rpc = supervisor()
    old = int(rpc.supervisor.getProcessInfo(name)["pid"])
    os.kill(old, signal.SIGKILL)
    port = program_port(name)

    async def back() -> bool:
        info = await asyncio.to_thread(rpc.supervisor.getProcessInfo, name)
        if info["statename"] == "FATAL":  # supervisord gave up (startretries): say so, retry
            row.note = "supervisord: FATAL, started again"
            await asyncio.to_thread(rpc.supervisor.startProcess, name, False)
        return bool(info["pid"] and info["pid"] != old and await ready(client, port))

    row.recovered = await until(back, 120)


async def pipeline_back(
    client: httpx.AsyncClient, base: str, key: str, receiver: WebhookReceiver, mail_dir: Path
) -> float | None:
    """Seconds from now until a new contact's webhook arrives and a new mail is captured."""
    n = uuid.uuid4().hex[:10]
    auth = {"Authorization": f"Bearer {key}"}
    email, rcpt = f"probe-{n}@{RCPT_DOMAIN}", f"probe-{n}@{RCPT_DOMAIN}"
    started = time.monotonic()
    done = {"contact": False, "send": False}

    async def go() -> bool:
        try:
            if not done["contact"]:
                r = await client.post(
                    f"{base}/api/v1/contacts",
                    json={"email": email},
                    headers={**auth, "Idempotency-Key": f"probe-c-{n}"},
                )
                done["contact"] = r.status_code in (200, 201)
            if not done["send"]:
                r = await client.post(
                    f"{base}/api/v1/emails/send",
                    headers={**auth, "Idempotency-Key": f"probe-s-{n}"},
                    json={
                        "from": f"load@{DOMAIN}",
                        "to": rcpt,
                        "subject": "probe",
                        "text": "p",
                        "category": "transactional",
                    },
                )
                done["send"] = r.is_success
        except httpx.HTTPError:
            return False
        hooked = any(email.encode() in q.body for q in list(receiver.requests))
        mailed = any(rcpt in m.rcpt_to for m in captured(mail_dir))
        return done["contact"] and done["send"] and hooked and mailed

    took = await until(go, 120)
    return None if took is None else time.monotonic() - started


def captured(mail_dir: Path) -> list[Any]:
    from scripts.dev.mail_capture import MailStore

    return MailStore(mail_dir).all() if mail_dir.is_dir() else []


async def outbox_left(dsn: str) -> dict[str, int]:
    from libs.common.settings import SCHEMA_SERVICES

    out: dict[str, int] = {}
    conn = await asyncpg.connect(dsn)
    try:
        for svc in SCHEMA_SERVICES:
            try:
                out[svc] = int(
                    await conn.fetchval(
                        f'SELECT count(*) FROM "{svc}".outbox WHERE published_at IS NULL'
                    )
                )
            except asyncpg.PostgresError:
                continue
    finally:
        await conn.close()
    return out


async def delivery_states(dsn: str) -> tuple[Counter[str], set[str]]:
    """Messages by status, and the recipients failed in the documented at-most-once window
    (`provider_outcome_unknown`: the provider call may have gone out, never resent)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM delivery.messages GROUP BY 1")
        unknown = await conn.fetch(
            "SELECT to_email FROM delivery.messages"
            " WHERE last_error LIKE 'provider_outcome_unknown%'"
        )
    finally:
        await conn.close()
    return Counter({r["status"]: r["n"] for r in rows}), {r["to_email"] for r in unknown}


def stack_vhost(env: dict[str, str]) -> str:
    """The RabbitMQ vhost the stack's processes use (the stack makes its own: see
    scripts.dev.stack), read from the URL it gives them."""
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(env.get("PM_AMQP_URL", "")).path.lstrip("/")) or "/"


def queue_column(infra: PrivateInfra, vhost: str, column: str) -> dict[str, int]:
    """`rabbitmqctl list_queues name <column>` in the stack's vhost (empty when the broker
    does not answer)."""
    r = infra.rabbit.ctl("list_queues", "-q", "-p", vhost, "name", column, timeout=30)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def dlq_depth(infra: PrivateInfra, vhost: str) -> dict[str, int]:
    return {q: n for q, n in queue_column(infra, vhost, "messages").items() if q.endswith(".dlq")}


async def consumers_back(infra: PrivateInfra, vhost: str, queues: set[str]) -> float | None:
    """Seconds from now until every queue in `queues` has a consumer again (the broker just
    came back: issue 16's target is 10 s)."""

    async def back() -> bool:
        now = await asyncio.to_thread(queue_column, infra, vhost, "consumers")
        return all(now.get(q, 0) > 0 for q in queues)

    return await until(back, 120)


def status_counts(samples: list[Sample], start: float, end: float) -> tuple[int, Counter[str]]:
    window = [s for s in samples if start <= s.at <= end]
    ok = sum(1 for s in window if s.status.startswith("2"))
    failed = Counter(s.status for s in window if not s.status.startswith("2"))
    return ok, failed


async def drill(args: argparse.Namespace, base: Path) -> int:
    t_begin = time.monotonic()
    infra = PrivateInfra(base / "infra", first=args.ports)
    print(f"chaos: private servers in {base} (ports {args.ports}..{args.ports + 5})", flush=True)
    dns, receiver = start_dns(), WebhookReceiver().start()
    dev_dir = base / "stack"
    env: dict[str, str] = {}
    try:
        infra.start()  # before the stack's environment: it names OpenBao's root token
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PM_", "VAULT_", "BAO_"))},
            **infra.stack_env(dev_dir, args.offset),
            "PM_DNS_RESOLVERS": dns.address,
        }
        os.environ.update(infra.stack_env(dev_dir, args.offset))  # scripts.dev.stack reads them
        print("chaos: starting the platform (scripts.dev.stack up) ...", flush=True)
        if stack_cmd(env, "up") != 0:
            print("chaos: the stack did not come up; logs in", dev_dir / "logs")
            return 1
        from scripts.dev import stack

        gw = stack.GATEWAY_URL
        mail_dir = dev_dir / "mail"
        limits = httpx.Limits(max_connections=args.concurrency + 4)
        async with httpx.AsyncClient(timeout=15, limits=limits) as client:
            key = await setup_tenant(client, gw, dns, receiver.url)
            try:
                campaign = await start_campaign(client, gw, key, args.campaign_recipients)
                print(
                    f"chaos: campaign {campaign.id} started"
                    f" ({len(campaign.recipients)} recipients)",
                    flush=True,
                )
            except (RuntimeError, httpx.HTTPError) as exc:
                # The rest of the drill still runs; the report says why there is no campaign.
                campaign = CampaignRun("", set(), status=f"NOT STARTED: {exc}")
                print(f"chaos: {campaign.status}", flush=True)
            load, stop = Load(), asyncio.Event()
            workers = [
                asyncio.create_task(
                    worker(
                        client, gw, key, load, stop, args.max_requests, args.concurrency / args.rate
                    )
                )
                for _ in range(args.concurrency)
            ]
            rows: list[FaultRow] = []
            await asyncio.sleep(args.settle)
            baseline = FaultRow("(steady load, no fault)", time.monotonic() - args.settle)
            baseline.ended, baseline.recovered = time.monotonic(), 0.0
            rows.append(baseline)

            campaign.sent_at["faults began"] = sum(campaign.captured(captured(mail_dir)).values())
            # The platform's processes (`<service>-<process>`); the stack's fakes and the mail
            # capture (fake-stripe, fake-cloudflare, mail-capture, ...) are not under test.
            programs = sorted(
                str(i["name"])
                for i in supervisor().supervisor.getAllProcessInfo()
                if str(i["name"]).partition("-")[0] in SERVICE_NAMES
            )
            for name in programs:
                row = FaultRow(f"kill -9 {name}", time.monotonic())
                await kill_program(client, name, row)
                await asyncio.sleep(args.settle)
                row.ended = time.monotonic()
                rows.append(row)
                print(f"chaos: {row.name}: back in {row.recovered}", flush=True)

            vhost = stack_vhost(env)

            async def dependency(name: str, down: Any, up: Any) -> None:
                row = FaultRow(f"restart {name} ({args.outage:.0f} s down)", time.monotonic())
                consuming = set()
                if name == "RabbitMQ":  # the queues that have consumers before the restart
                    now = await asyncio.to_thread(queue_column, infra, vhost, "consumers")
                    consuming = {q for q, n in now.items() if n > 0}
                await asyncio.to_thread(down)
                await asyncio.sleep(args.outage)
                await asyncio.to_thread(up)
                back_at = time.monotonic()
                consumers_took = (
                    await consumers_back(infra, vhost, consuming) if consuming else None
                )
                took = await until(lambda: probe_ok(client, gw, key), 120)
                row.recovered = None if took is None else time.monotonic() - row.started
                pipe = await pipeline_back(client, gw, key, receiver, mail_dir)
                through = time.monotonic() - back_at  # from the return, consumers' wait included
                row.note = (
                    f"api ok {took:.1f} s after {name} returned"
                    if took is not None
                    else "api NOT back in 120 s"
                )
                if consuming:
                    row.note += (
                        f"; all {len(consuming)} queues consumed again"
                        f" {consumers_took:.1f} s after it returned"
                        if consumers_took is not None
                        else f"; {len(consuming)} queues NOT all consumed after 120 s"
                    )
                # A new contact's webhook and a new mail, end to end: they queue behind the
                # backlog the outage left in the outboxes and queues.
                row.note += (
                    f"; a new event end to end {through:.1f} s after it returned"
                    if pipe is not None
                    else "; a new event NOT through after 120 s"
                )
                await asyncio.sleep(args.settle)
                row.ended = time.monotonic()
                rows.append(row)
                print(
                    f"chaos: {row.name}: {row.note} (back_at {back_at - t_begin:.0f})", flush=True
                )

            await dependency("RabbitMQ", infra.rabbit.stop, infra.rabbit.start)
            await dependency("PostgreSQL", infra.postgres.stop, infra.postgres.start)
            await dependency("Redis", infra.redis.stop, infra.redis.start)
            await dependency("OpenBao", infra.bao.stop, infra.bao.start)

            campaign.sent_at["faults ended"] = sum(campaign.captured(captured(mail_dir)).values())
            stop.set()
            await asyncio.gather(*workers)
            # Drain: wait until every accepted recipient is captured (or nothing moves).
            seen, still = -1, time.monotonic()
            while time.monotonic() - still < 30:
                got = {r for m in captured(mail_dir) for r in m.rcpt_to}
                if load.accepted_rcpts <= got:
                    break
                if len(got) != seen:
                    seen, still = len(got), time.monotonic()
                await asyncio.sleep(1)
            # The campaign finishes its spaced sends (bounded: `--campaign-wait` seconds).
            deadline = time.monotonic() + args.campaign_wait
            while campaign.id and time.monotonic() < deadline:
                campaign.status = await campaign_status(client, gw, key, campaign.id)
                if (
                    campaign.status == "completed"
                    and set(campaign.captured(captured(mail_dir))) >= campaign.recipients
                ):
                    break
                await asyncio.sleep(2)
            await asyncio.sleep(3)
            if campaign.id:
                campaign.status = await campaign_status(client, gw, key, campaign.id)
            campaign.sent_at["the end"] = sum(campaign.captured(captured(mail_dir)).values())
            pm_dsn = f"{infra.postgres.admin_dsn.rsplit('/', 1)[0]}/pm"
            left = await outbox_left(pm_dsn)
            states = await delivery_states(pm_dsn)
            dlq = dlq_depth(infra, vhost)

        took = time.monotonic() - t_begin
        print_report(load, rows, captured(mail_dir), receiver, left, dlq, states, took, campaign)
        return 0
    finally:
        if env:
            stack_cmd(env, "down", timeout=120)
        infra.stop()
        dns.stop()
        receiver.stop()


def print_report(
    load: Load,
    rows: list[FaultRow],
    mails: list[Any],
    receiver: WebhookReceiver,
    outbox: dict[str, int],
    dlq: dict[str, int],
    states: tuple[Counter[str], set[str]],
    took: float,
    campaign: CampaignRun,
) -> None:
    print()
    print(f"{'fault':<44} {'served':>6}  {'failed (by status)':<28} {'recover':>8}  note")
    five_hundreds = 0
    for row in rows:
        ok, failed = status_counts(load.samples, row.started, row.ended)
        five_hundreds += sum(n for s, n in failed.items() if s in ("500",))
        fails = " ".join(f"{s}:{n}" for s, n in sorted(failed.items())) or "-"
        rec = "-" if row.recovered is None else f"{row.recovered:.1f} s"
        if row.recovered is None:
            rec = "NOT BACK"
        print(f"{row.name:<44} {ok:>6}  {fails:<28} {rec:>8}  {row.note}")
    total_ok, total_failed = status_counts(load.samples, 0, float("inf"))
    print(
        f"{'(all)':<44} {total_ok:>6}  "
        f"{' '.join(f'{s}:{n}' for s, n in sorted(total_failed.items())) or '-'}"
    )

    per_rcpt = Counter(r for m in mails for r in m.rcpt_to if r.endswith(RCPT_DOMAIN))
    delivered = set(per_rcpt)
    accepted = load.accepted_rcpts
    by_status, unknown = states
    window = (accepted - delivered) & unknown  # the documented at-most-once window
    lost = accepted - delivered - unknown
    dup = {r: n for r, n in per_rcpt.items() if n > 1}
    unanswered = delivered - accepted  # sent though the client saw no 2xx (probes included)
    probes = {r for r in unanswered if r.startswith("probe-")}
    print()
    print(
        f"emails   accepted {len(accepted)},"
        f" delivered to the ESP stand-in {len(delivered & accepted)}"
        f", lost {len(lost)}, duplicated {len(dup)}"
        f"; delivered without a 2xx to the client {len(unanswered - probes)}"
        f" (of {len(load.attempted_rcpts - accepted)} unanswered), probes {len(probes)}"
    )
    print(
        f"         at-most-once window (provider_outcome_unknown, not resent) {len(window)};"
        f" messages by status {dict(by_status)}"
    )
    got = campaign.captured(mails)
    c_window = (campaign.recipients - set(got)) & unknown
    c_lost = campaign.recipients - set(got) - unknown
    c_dup = {r: n for r, n in got.items() if n > 1}
    moments = campaign.sent_at
    before = moments.get("faults began", 0)
    during = moments.get("faults ended", 0) - before
    print(
        f"campaign {len(campaign.recipients)} recipients, status {campaign.status};"
        f" delivered {len(got)}, lost {len(c_lost)}, duplicated {len(c_dup)},"
        f" at-most-once window {len(c_window)}"
    )
    print(
        f"         sent before the faults {before}, during them {during},"
        f" after {moments.get('the end', 0) - before - during}"
    )
    by_contact: dict[str, set[str]] = {}
    ids: Counter[str] = Counter()
    for q in list(receiver.requests):
        hid = next((v for k, v in q.headers.items() if k.lower() == "webhook-id"), "")
        ids[hid] += 1
        try:
            data = json.loads(q.body)["data"]
        except (ValueError, KeyError, TypeError):
            continue
        # Payload version 2026-12-01 (new endpoints' default) nests the entity:
        # data.contact.email; the older version has data.email.
        nested = data.get("contact") if isinstance(data, dict) else None
        email = (nested or {}).get("email") or (data or {}).get("email")
        if email:
            by_contact.setdefault(email, set()).add(hid)
    created = load.contacts
    hook_lost = created - set(by_contact)
    as_new = {e: h for e, h in by_contact.items() if len(h) > 1}
    redelivered = sum(n - 1 for n in ids.values() if n > 1)
    print(
        f"webhooks events {len(created)} (contacts created with a 201), delivered"
        f" {len(created & set(by_contact))}, lost {len(hook_lost)}, duplicated as new ids"
        f" {len(as_new)}, same id redelivered {redelivered}"
    )
    print(
        f"outbox   unpublished rows {sum(outbox.values())} {outbox if any(outbox.values()) else ''}"
    )
    print(f"dlq      depth {sum(dlq.values())} {dict((k, v) for k, v in dlq.items() if v) or ''}")
    print(f"500s     {five_hundreds}")
    print(f"took     {took:.0f} s")
    if lost:
        print(f"lost recipients (first 10): {sorted(lost)[:10]}")
    if c_lost:
        print(f"lost campaign recipients (first 10): {sorted(c_lost)[:10]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.chaos.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ports", type=int, default=7400, help="first of 6 server ports")
    parser.add_argument("--offset", type=int, default=2000, help="stack port offset")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument(
        "--rate", type=float, default=4.0, help="requests a second at most (pro plan: 300 a minute)"
    )
    parser.add_argument("--outage", type=float, default=5.0, help="seconds a dependency is down")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument(
        "--campaign-recipients",
        type=int,
        default=150,
        help="recipients of the campaign sent during the faults (1-2 s apart)",
    )
    parser.add_argument(
        "--campaign-wait",
        type=float,
        default=300.0,
        help="seconds to let the campaign finish after the faults",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="pm-chaos-"))
    try:
        return asyncio.run(drill(args, base))
    finally:
        if args.keep:
            print(f"chaos: kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
