"""The connections one service process holds, their lifecycle and their readiness checks.

A process opens only what it uses: its own Postgres schema (pool), Redis, Vault, and a
RabbitMQ connection whose only job in an API process is to tell readiness whether the broker
answers (API processes never publish directly: facts go through the outbox).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI

from libs.common.db import create_pool, schema_ready
from libs.common.settings import AMQP_RECONNECT_SECONDS, ServiceSettings
from libs.common.vault import Vault

Check = Callable[[], Awaitable[bool]]


class Resources:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        schema: str | None,
        redis: bool = False,
        vault: bool = False,
        amqp: bool = True,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self._want_redis = redis
        self._want_vault = vault
        self._want_amqp = amqp
        self._pool: asyncpg.Pool | None = None
        self._redis: aioredis.Redis | None = None
        self._vault: Vault | None = None
        self._amqp: aio_pika.abc.AbstractRobustConnection | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("no database pool: schema not configured or not opened")
        return self._pool

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("redis not opened")
        return self._redis

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise RuntimeError("vault not opened")
        return self._vault

    async def open(self) -> None:
        s = self.settings
        if self.schema:
            budget = s.pool_budget()  # this process kind's row of db.POOL_BUDGET
            self._pool = await create_pool(
                s.require_database_url(),
                self.schema,
                min_size=budget.min_size,
                max_size=budget.max_size,
            )
        if self._want_redis:
            self._redis = aioredis.from_url(
                s.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0
            )
        if self._want_vault:
            self._vault = Vault.connect(**s.vault_client_kwargs(), mount=s.vault_kv_mount)
        if self._want_amqp:
            # Robust: reconnects by itself; readiness reports the gap meanwhile.
            self._amqp = await aio_pika.connect_robust(
                s.amqp_url,
                client_properties={"connection_name": f"{s.service_name}-readiness"},
                reconnect_interval=AMQP_RECONNECT_SECONDS,
            )

    async def close(self) -> None:
        if self._amqp is not None:
            with contextlib.suppress(Exception):
                await self._amqp.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.open()
        app.state.resources = self
        try:
            yield
        finally:
            await self.close()

    def readiness(self) -> dict[str, Check]:
        checks: dict[str, Check] = {}
        if self.schema:
            schema = self.schema

            async def postgres() -> bool:
                return await schema_ready(self.pool, schema)

            checks["postgres"] = postgres
        if self._want_redis:

            async def redis() -> bool:
                return bool(await self.redis.ping())

            checks["redis"] = redis
        if self._want_vault:

            async def vault() -> bool:
                return await self.vault.is_ready()

            checks["vault"] = vault
        if self._want_amqp:

            async def rabbitmq() -> bool:
                return self._amqp is not None and not self._amqp.is_closed

            checks["rabbitmq"] = rabbitmq
        return checks


def resources_of(app: Any) -> Resources:
    res: Resources = app.state.resources
    return res
