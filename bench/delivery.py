"""Bulk sending: accept -> provider request throughput vs raw broker consumption, and the
accept time of a 10,000-recipient bulk send vs a plain COPY of the same rows.

1. baseline consume: N persistent messages waiting in a quorum queue, consumed and acked one
   by one by ONE aio-pika consumer (prefetch = the worker's): messages/s. The ceiling of any
   broker-driven pipeline on this broker.
2. baseline write: the 10,000 message rows of one bulk send, COPYed (asyncpg binary COPY)
   into a table shaped like `messages`: the ceiling of the accept path's main write.
3. pipeline: real `python -m services.delivery api|relay|worker` processes (one worker);
   N recipients sent as N/10,000 bulk calls straight to the delivery API with a signed
   principal (the gateway is built concurrently; it adds one proxy hop), delivered to a
   local fake Mailgun. Emails/s from the first API call to the provider request that
   carries the last recipient. Each call's accept time is measured too.

Provider rate limits are lifted for the fake (the seed's 300/s for Mailgun would measure
the limiter, not the pipeline). Runs in its own database and vhost (`pm_bench_delivery`).
Run: `uv run python -m bench.delivery` (needs the OpenBao dev server of `make infra`).
Targets (issue): pipeline >= 0.5x raw consume+ack; accept of 10,000 recipients <= 2 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import orjson

from bench.harness import ADMIN_DSN, AMQP_BASE, verdict
from libs.common.db import migrate
from libs.common.events import EmailBatchQueued, make_event
from libs.common.principal import Principal, sign_principal
from libs.common.provision import provision_database
from libs.common.vault import Vault, make_client
from services.delivery.repository import MESSAGE_COLUMNS
from tests.fakes.mailgun import FakeMailgun

REPO = Path(__file__).resolve().parents[1]
N = int(os.environ.get("BENCH_DELIVERY_N", "20000"))
PER_CALL = 10_000
BATCH_SIZE = 1000
PREFETCH = 32
DB = "pm_bench_delivery"
VHOST = "pm_bench_delivery"
VAULT_ADDR = os.environ.get("PM_BENCH_VAULT_ADDR", "http://127.0.0.1:8200")
PRINCIPAL_KEY = "bench-principal-key-0123456789abcdef-0123456789"
PORTS = {"api": 18303, "relay": 18313, "worker": 18323}


def dsn(role: str = "pm_delivery") -> str:
    host = ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    return f"postgresql://{role}@{host}/{DB}"


async def fresh_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", DB
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB}"')
    finally:
        await admin.close()
    await provision_database(ADMIN_DSN, database=DB)
    migrate("delivery", dsn())


def fresh_vhost() -> str:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", "delete_vhost", VHOST], capture_output=True, check=False)
    subprocess.run([exe, "-q", "add_vhost", VHOST], capture_output=True, check=True)
    subprocess.run(
        [exe, "-q", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
        capture_output=True,
        check=True,
    )
    return f"{AMQP_BASE}/{VHOST}"


async def baseline_consume(amqp_url: str, n: int) -> float:
    """One aio-pika consumer, prefetch as the worker's, consuming and acking n messages."""
    body = make_event(
        EmailBatchQueued(message_ids=[f"msg_{uuid.uuid4().hex}" for _ in range(10)]),
        tenant_id="t_bench",
        source="/bench",
    ).to_json()
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "bench.raw", durable=True, arguments={"x-queue-type": "quorum"}
        )
        for lo in range(0, n, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key="bench.raw",
                    )
                    for _ in range(min(500, n - lo))
                )
            )
        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=PREFETCH)
        queue = await consumer_channel.get_queue("bench.raw")
        done = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count == n:
                done.set()

        start = time.perf_counter()
        await queue.consume(on_message)
        await done.wait()
        return n / (time.perf_counter() - start)


async def baseline_copy(rows: list[tuple[object, ...]]) -> float:
    """Seconds to COPY the rows of one bulk send into a table shaped like `messages`."""
    conn = await asyncpg.connect(dsn(), server_settings={"search_path": "delivery"})
    try:
        await conn.execute("CREATE TABLE bench_messages (LIKE messages INCLUDING ALL)")
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_messages", records=rows, columns=list(MESSAGE_COLUMNS)
            )
        elapsed = time.perf_counter() - start
        await conn.execute("DROP TABLE bench_messages")
        return elapsed
    finally:
        await conn.close()


def copy_rows(n: int) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    return [
        (f"msg_{uuid.uuid4().hex}", "t_bench", "live", "cnt_x", None, None, None, None, None,
         f"r{i}@example.com", orjson.dumps({"name": f"R{i}"}).decode(), "marketing", [], "{}",
         True, True, "queued", now)
        for i in range(n)
    ]  # fmt: skip


def start(process: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(REPO / ".dev" / f"bench-delivery-{process}.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "services.delivery", process],
        env={**env, "PM_HTTP_PORT": str(PORTS[process])},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_ready(client: httpx.AsyncClient, process: str) -> None:
    while True:
        try:
            r = await client.get(f"http://127.0.0.1:{PORTS[process]}/readyz")
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)


async def main() -> None:
    await fresh_database()
    amqp_url = fresh_vhost()
    (REPO / ".dev").mkdir(exist_ok=True)
    token = (REPO / ".dev" / "vault-root-token").read_text().strip()
    vault = Vault(make_client(VAULT_ADDR, token=token))
    creds_path = f"bench-delivery/{uuid.uuid4().hex[:8]}"
    fake = FakeMailgun().start()
    await vault.write(f"{creds_path}/platform/mailgun", {"api_key": fake.api_key})

    raw_rate = await baseline_consume(amqp_url, N)
    copy_seconds = baseline_copy_s = await baseline_copy(copy_rows(PER_CALL))

    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env.update(
        PM_ENVIRONMENT="test", PM_DATABASE_URL=dsn(), PM_AMQP_URL=amqp_url,
        PM_VAULT_ADDR=VAULT_ADDR, PM_VAULT_TOKEN=token, PM_LOG_LEVEL="WARNING",
        PM_PRINCIPAL_SIGNING_KEY=PRINCIPAL_KEY, PM_FORCE_SANDBOX="false",
        PM_TRACKING_SIGNING_KEY="bench-tracking-key-0123456789abcdef-0123456789",
        PM_ESP_CREDENTIALS_PATH=f"{creds_path}/platform",
        PM_TENANT_CREDENTIALS_PATH=f"{creds_path}/tenants",
        PM_MAILGUN_BASE_URL=fake.url, PM_CONSUMER_PREFETCH=str(PREFETCH),
        PM_PROVIDER_LIMITS=json.dumps({"mailgun": [1_000_000, 1_000_000]}),
        PYTHONPATH=str(REPO),
    )  # fmt: skip
    procs = [start(p, env) for p in ("api", "relay", "worker")]
    accept_times: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            for p in PORTS:
                await wait_ready(client, p)
            principal = Principal(
                tenant_id="t_bench",
                subject_type="api_key",
                subject_id="key_bench",
                scopes=["send_email", "read_analytics"],
                plan="pro",
                mode="live",
            )  # type: ignore[arg-type]
            bodies = [
                orjson.dumps(
                    {
                        "from": "news@acme.example.com",
                        "subject": "Hello {{ name }}",
                        "html": '<p>Hi {{ name }}, <a href="https://acme.example.com/x">x</a></p>',
                        "category": "marketing",
                        "batch_size": BATCH_SIZE,
                        "recipients": [
                            {"email": f"r{i}@example.com", "personalization": {"name": f"R{i}"}}
                            for i in range(lo, min(N, lo + PER_CALL))
                        ],
                    }
                )
                for lo in range(0, N, PER_CALL)
            ]
            started = time.time()
            for body in bodies:
                headers = {
                    "X-PM-Principal": sign_principal(principal, PRINCIPAL_KEY, 60),
                    "Content-Type": "application/json",
                }
                t0 = time.perf_counter()
                r = await client.post(
                    f"http://127.0.0.1:{PORTS['api']}/api/v1/emails/send-bulk",
                    content=body,
                    headers=headers,
                )
                accept_times.append(time.perf_counter() - t0)
                r.raise_for_status()
            while len(fake.recipients()) < N:
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"a delivery process exited ({p.args})")
                await asyncio.sleep(0.05)
            last = max(req.at for req in fake.requests())
            pipeline_rate = N / (last - started)
            calls = len(fake.requests())
            duplicates = len(fake.recipients()) - len(set(fake.recipients()))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        fake.stop()
        await vault.delete(f"{creds_path}/platform/mailgun")

    accept = accept_times[0]
    print(f"bench/delivery.py  N={N} recipients in {len(bodies)} bulk call(s) of {PER_CALL:,}")
    print("  (delivery API called directly with a signed principal: no gateway hop)")
    print(f"  raw aio-pika consume+ack (1 consumer, prefetch {PREFETCH}): {raw_rate:,.0f} msg/s")
    print(
        f"  pipeline accept -> provider request (1 worker):  {pipeline_rate:,.0f} emails/s"
        f"  ({calls} Mailgun calls, {duplicates} duplicate recipients)"
    )
    print("  " + verdict("pipeline / raw consume", pipeline_rate / raw_rate, 0.5))
    print(f"  plain COPY of 10,000 message rows:  {copy_seconds * 1000:,.0f} ms")
    print(
        "  API accept of 10,000 recipients:     "
        + ", ".join(f"{t * 1000:,.0f} ms" for t in accept_times)
        + f"  (target <= 2000 ms) {'OK' if accept <= 2 else 'ABOVE TARGET'}"
    )
    print(f"  accept / plain COPY: {accept / baseline_copy_s:.1f}x the time of the bare row write")
    figures = {
        "raw_consume_rate": raw_rate,
        "pipeline_rate": pipeline_rate,
        "ratio": pipeline_rate / raw_rate,
        "accept_seconds": accept_times,
        "copy_seconds": copy_seconds,
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    asyncio.run(main())
