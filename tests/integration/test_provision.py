"""Provisioning against the real Postgres and OpenBao dev server (libs/common/provision.py).

Postgres tests use their own throwaway database `pm_provision_test`, dropped at the end. The
roles `pm_<svc>` are cluster-wide and shared with the dev stack and `pm_test`, so these tests
never set their passwords; password handling is tried on a role of a made-up service.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import hvac
import hvac.exceptions
import pytest

from libs.common.provision import (
    ProvisionError,
    approle_name,
    provision_database,
    provision_vault,
    service_dsn,
)
from libs.common.settings import SCHEMA_SERVICES, SERVICE_NAMES
from libs.common.signing_keys import load_private_key, public_keys_of
from tests.fixtures_infra import VaultDev

ADMIN_DSN = os.environ.get("PM_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB = "pm_provision_test"
FAKE_SERVICE = "provtest"  # a service that exists only in this test (role pm_provtest)


async def _drop_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "pm_{FAKE_SERVICE}"')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def provisioned() -> AsyncIterator[str]:
    await _drop_database()
    await provision_database(ADMIN_DSN, DB)
    yield DB
    await _drop_database()


async def _connect_as(service: str) -> asyncpg.Connection:
    return await asyncpg.connect(service_dsn(ADMIN_DSN, service, DB))


async def test_each_role_works_in_its_own_schema(provisioned: str) -> None:
    for svc in SCHEMA_SERVICES:
        conn = await _connect_as(svc)
        try:
            assert await conn.fetchval("SELECT current_schema()") == svc
            await conn.execute("CREATE TABLE IF NOT EXISTS own_table (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO own_table VALUES (1) ON CONFLICT DO NOTHING")
            assert await conn.fetchval(f"SELECT count(*) FROM {svc}.own_table") == 1
        finally:
            await conn.close()


async def test_service_sessions_never_jit_compile(provisioned: str) -> None:
    """The database's default: short statements whose estimated cost passes jit_above_cost
    (delivery's fair claim) compiled tens of ms of LLVM code on every execution."""
    for svc in SCHEMA_SERVICES:
        conn = await _connect_as(svc)
        try:
            assert await conn.fetchval("SHOW jit") == "off"
        finally:
            await conn.close()


async def test_a_role_cannot_touch_another_services_schema(provisioned: str) -> None:
    campaigns = await _connect_as("campaigns")
    try:
        await campaigns.execute("CREATE TABLE IF NOT EXISTS private_t (id int)")
    finally:
        await campaigns.close()

    keys = await _connect_as("keys")
    try:
        for sql in (
            "CREATE TABLE campaigns.x (id int)",
            "SELECT * FROM campaigns.private_t",
            "INSERT INTO campaigns.private_t VALUES (1)",
            "CREATE TABLE public.x (id int)",
            "CREATE SCHEMA sneaky",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await keys.execute(sql)
    finally:
        await keys.close()


async def test_roles_are_plain_logins_with_their_search_path(provisioned: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN, database=DB)
    try:
        for svc in SCHEMA_SERVICES:
            role = await admin.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", f"pm_{svc}")
            assert role is not None
            assert role["rolcanlogin"]
            assert not (role["rolsuper"] or role["rolcreatedb"] or role["rolcreaterole"])
            assert f"search_path={svc}" in (role["rolconfig"] or [])
            owner = await admin.fetchval(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", svc
            )
            assert owner == f"pm_{svc}"
    finally:
        await admin.close()


async def test_connect_is_revoked_from_public(provisioned: str) -> None:
    probe = f"pm_probe_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE ROLE "{probe}" LOGIN')
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            conn = await asyncpg.connect(ADMIN_DSN, user=probe, database=DB)
            await conn.close()
    finally:
        await admin.execute(f'DROP ROLE "{probe}"')
        await admin.close()


async def test_provisioning_again_even_concurrently_changes_nothing(provisioned: str) -> None:
    conn = await _connect_as("webhooks")
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('survives')")
    finally:
        await conn.close()

    await asyncio.gather(*(provision_database(ADMIN_DSN, DB) for _ in range(3)))
    await provision_database(ADMIN_DSN, DB)

    conn = await _connect_as("webhooks")
    try:
        assert await conn.fetchval("SELECT v FROM kept") == "survives"
    finally:
        await conn.close()
    admin = await asyncpg.connect(ADMIN_DSN, database=DB)
    try:
        schemas = await admin.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])",
            list(SCHEMA_SERVICES),
        )
        assert sorted(r["nspname"] for r in schemas) == sorted(SCHEMA_SERVICES)
    finally:
        await admin.close()


async def test_a_given_password_is_set_and_kept_out_of_the_dsn_quoting(provisioned: str) -> None:
    password = "s3cret'with/odd@chars%"
    await provision_database(ADMIN_DSN, DB, [FAKE_SERVICE], {FAKE_SERVICE: password})
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        stored = await admin.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", f"pm_{FAKE_SERVICE}"
        )
        assert stored is not None and stored.startswith("SCRAM-SHA-256$")
        # Re-running without passwords leaves the password alone.
        await provision_database(ADMIN_DSN, DB, [FAKE_SERVICE])
        again = await admin.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", f"pm_{FAKE_SERVICE}"
        )
        assert again == stored
    finally:
        await admin.close()
    dsn = service_dsn(ADMIN_DSN, FAKE_SERVICE, DB, password)
    conn = await asyncpg.connect(dsn)  # the quoted password survives the DSN round trip
    try:
        assert await conn.fetchval("SELECT current_user") == f"pm_{FAKE_SERVICE}"
    finally:
        await conn.close()


def test_service_dsn_keeps_host_port_and_options_only() -> None:
    base = "postgresql://postgres:admin@db.internal:6432/postgres?sslmode=require"
    assert service_dsn(base, "keys") == "postgresql://pm_keys@db.internal:6432/pm?sslmode=require"
    assert (
        service_dsn("postgres://[::1]:5433/x", "billing", "pm_test", "p@ss:w/rd")
        == "postgresql://pm_billing:p%40ss%3Aw%2Frd@[::1]:5433/pm_test"
    )
    with pytest.raises(ProvisionError):
        service_dsn("mysql://localhost/x", "keys")


async def test_names_that_need_quoting_are_refused() -> None:
    with pytest.raises(ProvisionError):
        await provision_database(ADMIN_DSN, 'pm"; DROP DATABASE postgres; --')


# ------------------------------------------------------------------------------- Vault


def _login(vault: VaultDev, creds: tuple[str, str]) -> hvac.Client:
    client = hvac.Client(url=vault.addr)
    client.auth.approle.login(role_id=creds[0], secret_id=creds[1])
    return client


@pytest.fixture(scope="module")
def approles(vault_dev: VaultDev) -> dict[str, tuple[str, str]]:
    return provision_vault(vault_dev.addr, vault_dev.token)


def test_every_service_gets_an_approle(approles: dict[str, tuple[str, str]]) -> None:
    assert set(approles) == set(SERVICE_NAMES)
    assert len({role_id for role_id, _ in approles.values()}) == len(SERVICE_NAMES)


def test_keys_writes_its_own_secrets_and_nothing_else(
    vault_dev: VaultDev, approles: dict[str, tuple[str, str]]
) -> None:
    keys = _login(vault_dev, approles["keys"])
    kv = keys.secrets.kv.v2
    path = f"keys/provision-test-{uuid.uuid4().hex[:8]}"
    kv.create_or_update_secret(path=path, secret={"v": "1"})
    try:
        assert kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["data"] == {
            "v": "1"
        }
    finally:
        kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret(path="campaigns/x", secret={"v": "1"})
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.read_secret_version(path="campaigns/x", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret(path="platform/principal", secret={"public_keys": "mine"})
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.read_secret_version(path="gateway/principal", raise_on_deleted_version=True)

    # The api_keys/ mount belongs to keys alone.
    api_path = f"provision-test-{uuid.uuid4().hex[:8]}"
    kv.create_or_update_secret(path=api_path, secret={"hash": "x"}, mount_point="api_keys")
    kv.delete_metadata_and_all_versions(path=api_path, mount_point="api_keys")
    campaigns = _login(vault_dev, approles["campaigns"])
    with pytest.raises(hvac.exceptions.Forbidden):
        campaigns.secrets.kv.v2.create_or_update_secret(
            path=api_path, secret={"hash": "x"}, mount_point="api_keys"
        )


def test_tokens_are_renewable_for_an_hour(
    vault_dev: VaultDev, approles: dict[str, tuple[str, str]]
) -> None:
    token = _login(vault_dev, approles["webhooks"]).auth.token.lookup_self()["data"]
    assert token["renewable"] is True
    assert 3500 < token["ttl"] <= 3600
    assert approle_name("webhooks") in token["policies"]


def _read(client: hvac.Client, path: str) -> dict[str, str]:
    data: dict[str, str] = client.secrets.kv.v2.read_secret_version(
        path=path, raise_on_deleted_version=True
    )["data"]["data"]
    return data


@pytest.mark.parametrize(
    ("private_path", "public_path", "minter"),
    [
        ("gateway/principal", "platform/principal", "gateway"),
        ("keys/user-token", "platform/user-token", "keys"),
    ],
)
def test_only_the_minting_service_reads_a_token_private_key(
    vault_dev: VaultDev,
    approles: dict[str, tuple[str, str]],
    private_path: str,
    public_path: str,
    minter: str,
) -> None:
    private = _read(_login(vault_dev, approles[minter]), private_path)["private_key"]
    load_private_key(private)
    for svc, creds in approles.items():
        client = _login(vault_dev, creds)
        # Every service reads the public half, which includes the minter's current key.
        assert public_keys_of(private) in _read(client, public_path)["public_keys"].split(","), svc
        if svc != minter:
            assert _read_status(client, private_path) == "forbidden", svc


def _read_status(client: hvac.Client, path: str) -> str:
    try:
        client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
    except hvac.exceptions.Forbidden:
        return "forbidden"
    except hvac.exceptions.InvalidPath:
        return "allowed"  # permitted, just absent
    return "allowed"


def test_third_party_credentials_are_readable_only_where_needed(
    vault_dev: VaultDev, approles: dict[str, tuple[str, str]]
) -> None:
    billing = _login(vault_dev, approles["billing"])
    delivery = _login(vault_dev, approles["delivery"])
    gateway = _login(vault_dev, approles["gateway"])
    assert _read_status(billing, "penguinmails/api-keys/stripe") == "allowed"
    assert _read_status(billing, "penguinmails/webhooks/stripe") == "allowed"
    assert _read_status(billing, "penguinmails/api-keys/postmark") == "forbidden"
    assert _read_status(delivery, "penguinmails/api-keys/postmark") == "allowed"
    assert _read_status(delivery, "penguinmails/webhooks/stripe") == "forbidden"
    assert _read_status(gateway, "penguinmails/api-keys/stripe") == "forbidden"
    # Delivery's ESP paths are listed one by one: the live Stripe key beside them is not
    # delivery's (issue 13), nor is anything else put in that folder later.
    for provider in ("postmark", "mailgun", "sendgrid", "ses", "smtp"):
        assert _read_status(delivery, f"penguinmails/api-keys/{provider}") == "allowed"
    assert _read_status(delivery, "penguinmails/api-keys/stripe") == "forbidden"
    assert _read_status(delivery, "penguinmails/api-keys/anything-new") == "forbidden"


def test_provision_vault_is_idempotent_and_keeps_valid_secret_ids(
    vault_dev: VaultDev, approles: dict[str, tuple[str, str]]
) -> None:
    root = hvac.Client(url=vault_dev.addr, token=vault_dev.token)
    key_before = _read(root, "gateway/principal")["private_key"]
    public_before = _read(root, "platform/principal")["public_keys"]

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: provision_vault(vault_dev.addr, vault_dev.token), [0, 1]))
    for run in runs:
        assert {svc: ids[0] for svc, ids in run.items()} == {
            svc: ids[0] for svc, ids in approles.items()
        }
    kept = provision_vault(
        vault_dev.addr,
        vault_dev.token,
        keep_secret_ids={"keys": approles["keys"][1], "billing": "not-a-valid-secret-id"},
    )
    assert kept["keys"] == approles["keys"]
    assert kept["billing"][1] != "not-a-valid-secret-id"
    _login(vault_dev, kept["billing"])  # the replacement works

    assert _read(root, "gateway/principal")["private_key"] == key_before
    assert _read(root, "platform/principal")["public_keys"] == public_before


def test_a_wrong_root_token_is_a_clear_error(vault_dev: VaultDev) -> None:
    with pytest.raises(ProvisionError, match="rejected the root token"):
        provision_vault(vault_dev.addr, "not-the-root-token")


def test_only_the_gateway_reads_the_idempotency_encryption_key(
    vault_dev: VaultDev, approles: dict[str, tuple[str, str]]
) -> None:
    assert len(_read(_login(vault_dev, approles["gateway"]), "gateway/idempotency")["key"]) >= 32
    for svc, creds in approles.items():
        if svc != "gateway":
            assert _read_status(_login(vault_dev, creds), "gateway/idempotency") == "forbidden"


def test_each_service_reaches_only_its_own_redis_keys(unique: str) -> None:
    import redis as redis_sync
    from redis.exceptions import NoPermissionError

    from libs.common.provision import provision_redis_users, redis_user_name
    from tests.conftest import REDIS_URL

    ns = f"pmacl{unique}"
    admin = redis_sync.Redis.from_url(REDIS_URL)
    services = ("gateway", "keys", "delivery", "campaigns")
    try:
        urls = provision_redis_users(REDIS_URL, ns, {s: f"pw-{s}-{unique}" for s in services})
        again = provision_redis_users(REDIS_URL, ns, {s: f"pw-{s}-{unique}" for s in services})
        assert again == urls  # idempotent
        gateway, keys, campaigns = (
            redis_sync.Redis.from_url(urls[s]) for s in ("gateway", "keys", "campaigns")
        )
        gateway.set(f"{ns}:gw:key:abc", "entry", ex=60)
        gateway.eval("return redis.call('GET', KEYS[1])", 1, f"{ns}:auth:revoked_sid:-")
        keys.set(f"{ns}:auth:revoked_sid:s1", "1", ex=60)
        keys.hincrby(f"{ns}:usage:k1", "r:0", 1)
        with pytest.raises(NoPermissionError):
            keys.set(f"{ns}:gw:key:abc", "re-pointed")  # keys cannot touch the gateway's cache
        with pytest.raises(NoPermissionError):
            gateway.set("pm:delivery:rate:x", "1")
        with pytest.raises(NoPermissionError):
            campaigns.get(f"{ns}:gw:key:abc")
        with pytest.raises(NoPermissionError):
            gateway.flushdb()
        assert admin.get(f"{ns}:gw:key:abc") == b"entry"
        for client in (gateway, keys, campaigns):
            client.close()
    finally:
        for s in services:
            # redis-py leaves execute_command untyped.
            admin.execute_command("ACL", "DELUSER", redis_user_name(s, ns))  # type: ignore[no-untyped-call]
        for name in admin.scan_iter(f"{ns}:*"):
            admin.delete(name)
        admin.close()


def test_redis_users_survive_a_restart_of_a_server_with_an_aclfile(tmp_path: Path) -> None:
    """`make chaos` found every service locked out of Redis after a restart (users set with
    ACL SETUSER live in memory): provisioning saves them to the server's aclfile."""
    import redis as redis_sync

    from libs.common.provision import provision_redis_users
    from scripts.chaos.instances import Redis
    from tests.conftest import free_port

    server = Redis(tmp_path, free_port())  # the chaos drill's: aclfile and append-only file
    server.start()
    try:
        urls = provision_redis_users(server.url, "pm", {"delivery": "pw-d"})
        server.stop()
        server.start()
        client = redis_sync.Redis.from_url(urls["delivery"])
        client.set("pm:delivery:x", "1")  # authenticated as its own user after the restart
        assert client.get("pm:delivery:x") == b"1"
        client.close()
    finally:
        server.stop()
