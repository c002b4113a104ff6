"""Per-service RabbitMQ users on the real broker (issue 13), in a vhost of this test's own:
a service's user cannot publish another service's routing key on `pm.events`, nor read
another service's queue; its own keys and queues work."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import aio_pika
import aiormq
import pytest

from libs.common.amqp_users import EXCHANGE, delete_amqp_users, provision_amqp_users
from tests.conftest import _rabbitmqctl

SERVICES = ["keys", "delivery", "billing", "campaigns"]


@pytest.fixture
def users() -> Iterator[dict[str, str]]:
    vhost = f"pm_test_{os.getpid()}_amqpusers"
    prefix = f"pm_test_{os.getpid()}"
    _rabbitmqctl("delete_vhost", vhost)
    assert _rabbitmqctl("add_vhost", vhost).returncode == 0
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield provision_amqp_users(
            vhost, {s: secrets.token_hex(12) for s in SERVICES}, prefix=prefix
        )
    finally:
        delete_amqp_users(SERVICES, prefix=prefix)
        _rabbitmqctl("delete_vhost", vhost)


async def _publish(url: str, routing_key: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(aio_pika.Message(b"{}"), routing_key=routing_key)
    finally:
        await connection.close()


async def test_a_service_user_publishes_only_its_own_routing_keys(users: dict[str, str]) -> None:
    await _publish(users["keys"], "tenant.plan_changed")
    await _publish(users["billing"], "tenant.plan_changed")
    await _publish(users["delivery"], "email.sent")
    await _publish(users["campaigns"], "email.requested")
    for service, key in (
        ("delivery", "tenant.plan_changed"),
        ("campaigns", "tenant.plan_changed"),
        ("delivery", "email.requested"),
        ("campaigns", "email.sent"),
        ("billing", "api_key.revoked"),
    ):
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _publish(users[service], key)


async def test_a_service_user_reads_only_its_own_queues(users: dict[str, str]) -> None:
    connection = await aio_pika.connect(users["keys"])
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("keys.plans", durable=True)
        await queue.bind(exchange, "tenant.plan_changed")
    finally:
        await connection.close()
    connection = await aio_pika.connect(users["delivery"])
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.declare_queue("keys.plans", passive=True)
            queue = await channel.get_queue("keys.plans")
            await queue.consume(_ignore)
    finally:
        await connection.close()


async def test_no_service_user_writes_to_the_default_exchange(users: dict[str, str]) -> None:
    """Through the default exchange a service could push a message into another service's
    queue by name (topic permissions do not apply there): refused, and its own queues are
    reached through its own exchange `<service>.direct`."""
    connection = await aio_pika.connect(users["keys"])
    try:
        channel = await connection.channel()
        await channel.declare_queue("keys.plans", durable=True)
    finally:
        await connection.close()
    connection = await aio_pika.connect(users["delivery"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key="keys.plans"
            )
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            # Nor its own: everything of its own goes through `delivery.direct`.
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key="delivery.send"
            )
        channel = await connection.channel(publisher_confirms=True)
        own = await channel.declare_exchange(
            "delivery.direct", aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue("delivery.send", durable=True)
        await queue.bind(own, routing_key="delivery.send")
        await own.publish(aio_pika.Message(b"{}"), routing_key="delivery.send")
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            # Another service's exchange is not its to write either.
            await channel.declare_exchange("keys.direct", aio_pika.ExchangeType.DIRECT)
    finally:
        await connection.close()
    assert (await _depth(users["keys"], "keys.plans")) == 0


async def _depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _ignore(message: object) -> None:
    """A consumer that is never called (the broker refuses the subscription)."""
