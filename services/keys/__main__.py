"""Processes of the keys service: `python -m services.keys api|relay|worker`, and its admin
commands `migrate`, `create-tenant` and `change-plan`."""

import argparse
import asyncio
import getpass
import secrets
import sys

from libs.common.db import create_pool
from libs.common.resources import Resources
from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
    serve_bus,
)
from services.keys.api import api_keys_vault, create_api
from services.keys.consumers import setup
from services.keys.schemas import PLANS
from services.keys.service import KeysService, run_usage_flusher
from services.keys.settings import KeysSettings


async def api(settings: KeysSettings) -> None:
    await run_process(settings, "api", create_api(settings))


async def worker(settings: KeysSettings) -> None:
    """Consumes `tenant.plan_changed` and flushes key usage from Redis to Postgres."""
    resources = Resources(settings, schema="keys", redis=True, amqp=False)
    await resources.open()

    async def flush_usage(stop: asyncio.Event) -> None:
        await run_usage_flusher(resources.pool, resources.redis, settings, stop)

    try:
        await serve_bus(
            settings, resources, lambda bus: setup(bus, resources), background=[flush_usage]
        )
    finally:
        await resources.close()


async def _admin_service(settings: KeysSettings) -> KeysService:
    import redis.asyncio as aioredis

    budget = settings.pool_budget()  # a command's row of the connection budget
    pool = await create_pool(
        settings.require_database_url(), "keys", min_size=budget.min_size, max_size=budget.max_size
    )
    return KeysService(
        settings, pool, api_keys_vault(settings), aioredis.from_url(settings.redis_url)
    )


def create_tenant(settings: KeysSettings, argv: list[str]) -> int:
    """`create-tenant --email E --company C [--plan P] [--password-stdin]`: a tenant and its
    owner, like signup but from a shell (works when signup is switched off)."""
    parser = argparse.ArgumentParser(prog="python -m services.keys create-tenant")
    parser.add_argument("--email", required=True)
    parser.add_argument("--company", required=True)
    parser.add_argument("--plan", choices=PLANS, default="starter")
    parser.add_argument("--password-stdin", action="store_true", help="read the password")
    args = parser.parse_args(argv)
    generated = not args.password_stdin
    if args.password_stdin:
        tty = sys.stdin.isatty()
        password = getpass.getpass() if tty else sys.stdin.readline().rstrip("\n")
    else:
        password = secrets.token_urlsafe(18)

    async def run() -> tuple[str, str]:
        svc = await _admin_service(settings)
        try:
            tenant, user = await svc.create_tenant(args.email, password, args.company, args.plan)
            return tenant["id"], user["id"]
        finally:
            await svc.pool.close()
            await svc.redis.aclose()

    tenant_id, user_id = asyncio.run(run())
    print(f"tenant_id={tenant_id}\nuser_id={user_id}")
    if generated:
        print(f"password={password}  (shown once)")
    return 0


def change_plan(settings: KeysSettings, argv: list[str]) -> int:
    """`set-plan TENANT_ID PLAN [--reason R]` (alias `change-plan`): sets the plan and
    publishes `tenant.plan_changed` through the outbox (billing does the same after a
    checkout). The only way to put a tenant on the internal `unlimited` plan."""
    parser = argparse.ArgumentParser(prog="python -m services.keys set-plan")
    parser.add_argument("tenant_id")
    parser.add_argument("plan", choices=PLANS)
    parser.add_argument("--reason", default="admin")
    args = parser.parse_args(argv)

    async def run() -> str | None:
        svc = await _admin_service(settings)
        try:
            return await svc.change_plan(args.tenant_id, args.plan, args.reason)
        finally:
            await svc.pool.close()
            await svc.redis.aclose()

    old = asyncio.run(run())
    print(f"{args.tenant_id}: {old} -> {args.plan}")
    return 0


PROCESSES: dict[str, Process] = {"api": api, "relay": relay_process("keys"), "worker": worker}
COMMANDS: dict[str, Command] = {
    "migrate": migrate_command("keys"),
    "create-tenant": create_tenant,
    "set-plan": change_plan,
    "change-plan": change_plan,
}

if __name__ == "__main__":
    sys.exit(run_cli("keys", KeysSettings, PROCESSES, COMMANDS))
