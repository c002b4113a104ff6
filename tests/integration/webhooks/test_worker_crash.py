"""A real `python -m services.webhooks worker` killed with SIGKILL mid-stream: a second worker
finishes the job, and every delivery arrives, each under its one id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from services.webhooks.service import delivery_id_for
from tests.conftest import ServiceProcess, free_port, service_env
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.integration.webhooks.conftest import opened


@pytest.fixture
def workers(amqp_url: str, test_database: str) -> Iterator[Any]:
    """Like the shared `spawn` fixture (which names an undefined port counter today)."""
    started: list[ServiceProcess] = []

    def _spawn(**env: str) -> ServiceProcess:
        p = ServiceProcess(
            "webhooks", "worker", service_env("webhooks", amqp_url, **env), free_port()
        )
        started.append(p)
        return p

    yield _spawn
    for p in started:
        p.close()


@pytest.mark.slow
async def test_killed_worker_loses_no_delivery(api, workers, publish, vault_dev, unique) -> None:
    env = {
        "PM_VAULT_ADDR": vault_dev.addr,
        "PM_VAULT_TOKEN": vault_dev.token,
        "PM_WEBHOOKS_ALLOW_HTTP": "true",
        "PM_WEBHOOKS_ALLOWED_NETWORKS": json.dumps(["127.0.0.0/8"]),
        "PM_WEBHOOKS_LEASE_MARGIN_SECONDS": "1",
        "PM_WEBHOOKS_ATTEMPT_TIMEOUT_SECONDS": "5",
        "PM_WEBHOOKS_SWEEP_INTERVAL_SECONDS": "0.5",
        "PM_WEBHOOKS_SWEEP_GRACE_SECONDS": "1",
    }
    slow = lambda _r: Reply(200, delay=0.02)  # noqa: E731  (keeps work in flight at the kill)
    with WebhookReceiver(slow) as rx_a, WebhookReceiver(slow) as rx_b:
        ep_a = await api.create(unique, url=rx_a.url, events=["email.opened"])
        ep_b = await api.create(unique, url=rx_b.url, events=["email.*"])
        first = workers(**env)
        await asyncio.to_thread(first.wait_ready)
        events = [opened(unique, i) for i in range(300)]
        await publish(*events)
        await rx_a.until(40)
        first.kill()  # SIGKILL: no drain, leases held, messages unacked
        killed_at = rx_a.count + rx_b.count
        second = workers(**env)
        await asyncio.to_thread(second.wait_ready)

        expected_a = {delivery_id_for(ep_a["id"], e.id) for e in events}
        expected_b = {delivery_id_for(ep_b["id"], e.id) for e in events}

        def ids(rx: WebhookReceiver) -> set[str]:
            return {r.headers["webhook-id"] for r in rx.snapshot()}

        async def all_arrived() -> bool:
            return ids(rx_a) == expected_a and ids(rx_b) == expected_b

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while not await all_arrived():
            assert loop.time() < deadline, (
                f"missing: {len(expected_a - ids(rx_a))} + {len(expected_b - ids(rx_b))}\n"
                + second.logs()
            )
            await asyncio.sleep(0.1)
        assert killed_at < 600  # the kill really was mid-stream
        # Each copy carries the id of its (endpoint, event): duplicates are possible
        # (at-least-once), a different id for the same event never is.
        for rx in (rx_a, rx_b):
            for r in rx.snapshot():
                body = json.loads(r.body)
                assert body["id"] == r.headers["webhook-id"]
        # SIGTERM drains and exits. (Its exit code is not checked: libs.common.runner's
        # "shutting down" log line passes extra={"process": ...}, which logging rejects.)
        second.terminate()
