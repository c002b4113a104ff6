"""The keys service's domain logic against the real Postgres, Redis and OpenBao (its own
AppRole): key storage, verification, login throttling, sessions, usage flushing, plans."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import bcrypt
import pytest
import redis.asyncio as aioredis

from libs.common.apikeys import generate_api_key
from libs.common.bus import PermanentError
from libs.common.bus_testing import InProcessBus
from libs.common.db import create_pool
from libs.common.events import TenantPlanChanged, make_event
from libs.common.http import ApiError
from libs.common.principal import Principal
from libs.common.vault import Vault, make_client
from services.keys import repository as repo
from services.keys.consumers import setup
from services.keys.schemas import CreateApiKeyRequest
from services.keys.service import InvalidApiKey, KeysService, flush_usage, usage_key
from services.keys.settings import KeysSettings
from tests.conftest import REPO, service_dsn, service_env

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
async def pool(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(service_dsn("keys"), "keys", min_size=1, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def make_service(
    pool: asyncpg.Pool, keys_vault: dict[str, str], redis_url: str, unique: str
) -> AsyncIterator[object]:
    redis = aioredis.from_url(redis_url)
    vault = Vault(
        make_client(
            keys_vault["PM_VAULT_ADDR"],
            role_id=keys_vault["PM_VAULT_ROLE_ID"],
            secret_id=keys_vault["PM_VAULT_SECRET_ID"],
        ),
        mount="api_keys",
    )

    def build(**overrides: object) -> KeysService:
        values: dict[str, object] = {"bcrypt_rounds": 4, "redis_namespace": f"pmk{unique}"}
        settings = KeysSettings(**{**values, **overrides})  # type: ignore[arg-type]
        return KeysService(settings, pool, vault, redis)

    yield build
    await redis.aclose()


def _user(tenant_id: str, user_id: str) -> Principal:
    return Principal(
        tenant_id=tenant_id,
        subject_type="user",
        subject_id=user_id,
        scopes=[],
        plan="starter",
        mode="live",
    )


async def test_vault_holds_a_cost_12_bcrypt_hash_and_postgres_no_secret(
    make_service: object, pool: asyncpg.Pool, unique: str
) -> None:
    svc: KeysService = make_service(bcrypt_rounds=12)  # type: ignore[operator]
    tenant, user = await svc.create_tenant(f"v-{unique}@example.com", PASSWORD, "Vaulted")
    created = await svc.create_key(
        _user(tenant["id"], user["id"]),
        CreateApiKeyRequest(name="prod", scopes=["send_email"]),
    )
    key: str = created["key"]
    secret = key[16:34]
    stored = await svc.vault.read(f"{tenant['id']}/{created['id']}")
    assert stored is not None
    assert stored["hash"].startswith("$2b$12$")
    assert key not in str(stored) and secret not in str(stored)
    assert bcrypt.checkpw(key.encode(), stored["hash"].encode())
    # Nothing in the keys schema holds the key or its secret part (rows and outbox).
    rows = []
    for table in ("api_keys", "api_key_usage", "outbox", "tenants", "sessions"):
        rows += await pool.fetch(f"SELECT * FROM {table}")
    dump = "\n".join(str(dict(r)) for r in rows)
    assert key not in dump and secret not in dump
    assert created["masked_key"].startswith(f"pm_live_{created['lookup_id']}")
    assert created["masked_key"].endswith(key[-4:]) and secret not in created["masked_key"]
    verified = await svc.verify(key)
    assert (verified.key_id, verified.tenant_id, verified.scopes) == (
        created["id"],
        tenant["id"],
        ["send_email"],
    )


async def test_verify_rejects_wrong_revoked_expired_and_other_tenants_keys(
    make_service: object, pool: asyncpg.Pool, unique: str
) -> None:
    svc: KeysService = make_service()  # type: ignore[operator]
    tenant, user = await svc.create_tenant(f"r-{unique}@example.com", PASSWORD, "Revoker")
    who = _user(tenant["id"], user["id"])
    created = await svc.create_key(who, CreateApiKeyRequest(name="a", scopes=["send_email"]))
    forged = generate_api_key("live", lookup_id=created["lookup_id"]).raw
    with pytest.raises(InvalidApiKey):
        await svc.verify(forged)
    with pytest.raises(InvalidApiKey):
        # checksum: change the last character (to one it is not, or the key stays valid)
        await svc.verify(created["key"][:-1] + ("x" if created["key"][-1] != "x" else "y"))
    other_tenant, _ = await svc.create_tenant(f"o-{unique}@example.com", PASSWORD, "Other")
    with pytest.raises(ApiError) as not_found:
        await svc.revoke_key(other_tenant["id"], created["id"])
    assert not_found.value.status_code == 404
    revoked = await svc.revoke_key(tenant["id"], created["id"])
    assert revoked["status"] == "revoked"
    assert await svc.vault.read(f"{tenant['id']}/{created['id']}") is None
    with pytest.raises(InvalidApiKey):
        await svc.verify(created["key"])
    assert (await svc.revoke_key(tenant["id"], created["id"]))["status"] == "revoked"
    events = await pool.fetch(
        "SELECT event_type FROM outbox WHERE tenant_id = $1 ORDER BY created_at", tenant["id"]
    )
    assert [e["event_type"] for e in events] == [
        "tenant.created",
        "api_key.created",
        "api_key.revoked",
    ]
    expiring = await svc.create_key(
        who,
        CreateApiKeyRequest(
            name="e", scopes=["send_email"], expires_at=datetime.now(UTC) + timedelta(hours=1)
        ),
    )
    await pool.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
        expiring["id"],
    )
    with pytest.raises(InvalidApiKey):
        await svc.verify(expiring["key"])


async def test_login_counts_failures_only_and_slows_the_guesser_not_the_owner(
    make_service: object, unique: str
) -> None:
    # A long base delay: the test never waits it out, so no timing is involved.
    svc: KeysService = make_service(  # type: ignore[operator]
        login_max_failures_per_account=3,
        login_max_failures_per_ip=8,
        login_delay_base_seconds=600,
        login_delay_max_seconds=3600,
    )
    email = f"l-{unique}@example.com"
    await svc.create_tenant(email, PASSWORD, "Login")
    # Successful logins never count against an address.
    for _ in range(10):
        assert (await svc.login(email, PASSWORD, "10.0.0.3"))["access_token"]
    codes = []
    for _ in range(4):
        with pytest.raises(ApiError) as failed:
            await svc.login(email, "wrong password!", "10.0.0.1")
        codes.append(failed.value.code)
    # Three free failures, then this address must wait (progressive delay), ...
    assert codes == ["invalid_credentials"] * 3 + ["login_throttled"]
    assert int(failed.value.headers["Retry-After"]) > 500  # type: ignore[index]
    # ... but the account is not locked: its owner, elsewhere, signs in.
    assert (await svc.login(email, PASSWORD, "10.0.0.2"))["access_token"]

    # IPv6 callers are one address per /64.
    for host in ("2001:db8:5::1", "2001:db8:5::2", "2001:db8:5::3"):
        with pytest.raises(ApiError):
            await svc.login(email, "wrong password!", host)
    with pytest.raises(ApiError) as v6:
        await svc.login(email, PASSWORD, "2001:db8:5::ffff")
    assert v6.value.code == "login_throttled"

    # Failures on any accounts add up per address: 3 so far from 10.0.0.1, 5 more = 8.
    for n in range(5):
        with pytest.raises(ApiError):
            await svc.login(f"nobody-{n}-{unique}@example.com", "wrong password!", "10.0.0.1")
    other = f"l2-{unique}@example.com"
    await svc.create_tenant(other, PASSWORD, "Login2")
    with pytest.raises(ApiError) as by_ip:
        await svc.login(other, PASSWORD, "10.0.0.1")
    assert by_ip.value.code == "login_throttled"


async def test_signups_are_throttled_per_address(make_service: object, unique: str) -> None:
    svc: KeysService = make_service(signup_max_per_ip=2)  # type: ignore[operator]
    await svc.signup(f"s0-{unique}@example.com", PASSWORD, "S", "2001:db8:0::1")
    await svc.signup(f"s1-{unique}@example.com", PASSWORD, "S", "2001:db8:1::1")  # other /64
    await svc.signup(f"s2-{unique}@example.com", PASSWORD, "S", "2001:db8:0::2")
    with pytest.raises(ApiError) as refused:
        await svc.signup(f"s3-{unique}@example.com", PASSWORD, "S", "2001:db8:0::3")
    assert refused.value.code == "login_throttled"


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(
    make_service: object, unique: str
) -> None:
    svc: KeysService = make_service()  # type: ignore[operator]
    email = f"s-{unique}@example.com"
    await svc.create_tenant(email, PASSWORD, "Sessions")
    session = await svc.login(email, PASSWORD, "10.0.0.9")
    rotated = await svc.refresh(session["refresh_token"])
    assert rotated["refresh_token"] != session["refresh_token"]
    with pytest.raises(ApiError) as reused:
        await svc.refresh(session["refresh_token"])
    assert reused.value.code == "invalid_refresh_token"
    # The theft signal revoked the whole session: the rotated token is dead too.
    with pytest.raises(ApiError):
        await svc.refresh(rotated["refresh_token"])


async def test_signup_can_be_switched_off(make_service: object, unique: str) -> None:
    svc: KeysService = make_service(signup_enabled=False)  # type: ignore[operator]
    with pytest.raises(ApiError) as off:
        await svc.signup(f"x-{unique}@example.com", PASSWORD, "Nope", "10.1.1.1")
    assert (off.value.status_code, off.value.code) == (403, "signup_disabled")


async def test_usage_flush_moves_counts_once_even_after_a_crash(
    make_service: object, pool: asyncpg.Pool, unique: str
) -> None:
    svc: KeysService = make_service()  # type: ignore[operator]
    ns = svc.settings.redis_namespace
    tenant, user = await svc.create_tenant(f"u-{unique}@example.com", PASSWORD, "Usage")
    created = await svc.create_key(
        _user(tenant["id"], user["id"]), CreateApiKeyRequest(name="u", scopes=["send_email"])
    )
    minute = int(datetime.now(UTC).timestamp()) // 60 * 60
    # What the gateway's rate-limit script writes per request.
    await svc.redis.hset(
        usage_key(ns, created["id"]),
        mapping={f"r:{minute}": 7, f"e:{minute}": 2, f"r:{minute - 60}": 3, "last": minute + 5},
    )
    await svc.redis.sadd(f"{ns}:usage:dirty", created["id"])
    assert await flush_usage(pool, svc.redis, ns) == 1
    # A flusher that died after its commit, before deleting its in-flight hash:
    batch = uuid.uuid4().hex
    inflight = f"{ns}:usage:inflight:{batch}:{created['id']}"
    await svc.redis.hset(inflight, mapping={f"r:{minute}": 100})
    async with pool.acquire() as conn:
        await repo.claim_usage_batch(conn, f"{batch}:{created['id']}")
    assert await flush_usage(pool, svc.redis, ns) == 1  # recovered: dropped, not re-applied
    assert not await svc.redis.exists(inflight)
    usage = await svc.usage(tenant["id"], created["id"], None, None)
    assert usage["totals"]["request_count"] == 10
    assert usage["totals"]["error_count"] == 2
    assert [(b["requests"], b["errors"]) for b in usage["buckets"]] == [(3, 0), (7, 2)]


async def test_plan_changed_event_updates_the_tenant(
    make_service: object, pool: asyncpg.Pool, unique: str
) -> None:
    svc: KeysService = make_service()  # type: ignore[operator]
    tenant, _ = await svc.create_tenant(f"p-{unique}@example.com", PASSWORD, "Plans")
    event = make_event(
        TenantPlanChanged(old_plan="starter", new_plan="enterprise", reason="checkout"),
        tenant_id=tenant["id"],
        source="/services/billing",
    )
    # The consumer as the worker registers it, in process: typed payload, inbox transaction.
    bus = InProcessBus("keys", pool)
    setup(bus, None)  # type: ignore[arg-type]  # the keys consumer uses no resources
    assert await bus.deliver(event) == 1
    assert await svc.tenant_plan(tenant["id"]) == "enterprise"
    # A redelivery is skipped by the inbox: a later change is not undone.
    await svc.change_plan(tenant["id"], "starter", None)
    assert await bus.deliver(event) == 1
    assert await svc.tenant_plan(tenant["id"]) == "starter"
    with pytest.raises(PermanentError):
        await bus.publish(
            TenantPlanChanged(old_plan=None, new_plan="platinum"),
            tenant_id=tenant["id"],
            source="/services/billing",
        )


def test_create_tenant_command(
    amqp_url: str, test_database: str, keys_vault: dict[str, str], unique: str
) -> None:
    env = service_env("keys", amqp_url, PM_BCRYPT_ROUNDS="4", **keys_vault)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.keys",
            "create-tenant",
            "--email",
            f"cli-{unique}@example.com",
            "--company",
            "Shell Co",
            "--plan",
            "pro",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tenant_id=ten_")
    assert "password=" not in done.stdout


@pytest.mark.parametrize(
    ("source", "plan"),
    [
        ("/services/campaigns", "enterprise"),  # not a producer of plan changes
        ("/services/billing", "unlimited"),  # billing (Stripe) can never grant it
        ("/attacker", "pro"),
    ],
)
async def test_plan_changes_are_applied_only_from_their_producers(
    make_service: object, pool: asyncpg.Pool, unique: str, source: str, plan: str
) -> None:
    svc: KeysService = make_service()  # type: ignore[operator]
    tenant, _ = await svc.create_tenant(f"ps-{unique}@example.com", PASSWORD, "Plans")
    forged = make_event(
        TenantPlanChanged(old_plan="starter", new_plan=plan), tenant_id=tenant["id"], source=source
    )
    bus = InProcessBus("keys", pool)
    setup(bus, None)  # type: ignore[arg-type]  # the keys consumer uses no resources
    with pytest.raises(PermanentError):
        await bus.deliver(forged)
    assert await svc.tenant_plan(tenant["id"]) == "starter"


async def test_the_plan_caps_active_api_keys(make_service: object, unique: str) -> None:
    svc: KeysService = make_service()  # type: ignore[operator]
    tenant, user = await svc.create_tenant(f"cap-{unique}@example.com", PASSWORD, "Cap", "free")
    owner = _user(tenant["id"], user["id"])
    req = CreateApiKeyRequest(name="k", scopes=["send_email"])
    first = await svc.create_key(owner, req)
    await svc.create_key(owner, req)
    with pytest.raises(ApiError) as refused:
        await svc.create_key(owner, req)
    assert refused.value.status_code == 409
    assert refused.value.code == "api_key_limit_reached"
    # Revoking one frees a slot.
    await svc.revoke_key(tenant["id"], first["id"])
    await svc.create_key(owner, req)


def test_only_the_admin_command_sets_the_internal_unlimited_plan(
    amqp_url: str, test_database: str, keys_vault: dict[str, str], unique: str
) -> None:
    from libs.common.plans import PLANS

    env = service_env("keys", amqp_url, PM_BCRYPT_ROUNDS="4", **keys_vault)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.keys", *args],
            input=PASSWORD + "\n",
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = run("create-tenant", "--email", f"u-{unique}@example.com", "--company", "U",
                  "--password-stdin")  # fmt: skip
    assert created.returncode == 0, created.stderr
    tenant_id = created.stdout.split()[0].split("=", 1)[1]
    done = run("set-plan", tenant_id, "unlimited")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tenant_id}: starter -> unlimited"
    assert PLANS["unlimited"].key_cap is None


async def test_key_list_pages_sorts_and_filters(make_service: object, unique: str) -> None:
    from libs.common.pagination import ListParams

    svc: KeysService = make_service()  # type: ignore[operator]
    tenant, user = await svc.create_tenant(f"l-{unique}@example.com", PASSWORD, "Lister")
    who = _user(tenant["id"], user["id"])
    ids = []
    for i, mode in enumerate(("live", "test", "live")):
        req = CreateApiKeyRequest(name=f"k{i}", scopes=["send_email"], mode=mode)
        ids.append((await svc.create_key(who, req))["id"])
    await svc.revoke_key(tenant["id"], ids[0])

    seen, cursor = [], None
    while True:
        page = await svc.list_keys(tenant["id"], ListParams(limit=2, order="asc", cursor=cursor))
        seen += [k["id"] for k in page.items]
        cursor = page.pagination.next_cursor
        if not page.pagination.has_more:
            break
    assert seen == ids
    newest = await svc.list_keys(tenant["id"], ListParams(limit=1, offset=1))
    assert [k["id"] for k in newest.items] == [ids[1]]
    assert newest.pagination.offset == 1 and newest.pagination.has_more
    active = await svc.list_keys(tenant["id"], ListParams(limit=10), status="active", mode="live")
    assert [k["id"] for k in active.items] == [ids[2]]
    named = await svc.list_keys(tenant["id"], ListParams(limit=10), name="k1")
    assert [k["id"] for k in named.items] == [ids[1]]
    assert set(named.items[0]["usage"]) == {"request_count", "error_count", "last_used_at"}
    # A cursor from one order is refused by the other.
    first = await svc.list_keys(tenant["id"], ListParams(limit=1))
    with pytest.raises(ApiError) as refused:
        await svc.list_keys(
            tenant["id"], ListParams(limit=1, order="asc", cursor=first.pagination.next_cursor)
        )
    assert refused.value.code == "invalid_cursor"
