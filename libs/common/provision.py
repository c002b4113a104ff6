"""Admin provisioning of the platform's Postgres database and Vault (OpenBao) identities.

Owns the one-time, idempotent set-up that needs admin rights and that no service may do for
itself: the `pm` database with one schema and one LOGIN role per service (each role owns its
schema and can touch no other), and in Vault the KV mounts, the per-service policies from
`deploy/vault/policies/<svc>.hcl`, one AppRole per service and the Ed25519 key pairs of the
principal (private half under `secret/gateway/`) and of dashboard access tokens (private half
under `secret/keys/`), public halves under `secret/platform/`. Used by the dev stack
(`scripts/dev/stack.py`), the test suite and the provisioning Job; every step may run again,
and two runs may overlap.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import hvac
import hvac.exceptions

from libs.common.settings import SCHEMA_SERVICES, SERVICE_NAMES
from libs.common.signing_keys import generate_private_key, public_keys_of

POLICY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "policies"
KV_MOUNT = "secret"
API_KEYS_MOUNT = "api_keys"
APPROLE_MOUNT = "approle"
# Ed25519 token keys: (private path readable only by the minting service, public path under
# platform/ that every service reads). Fields: `private_key`, `public_keys`.
PRINCIPAL_PRIVATE_PATH = "gateway/principal"
PRINCIPAL_PUBLIC_PATH = "platform/principal"
USER_TOKEN_PRIVATE_PATH = "keys/user-token"  # noqa: S105
USER_TOKEN_PUBLIC_PATH = "platform/user-token"  # noqa: S105
# Encrypts the gateway's stored idempotent responses (gateway policy only).
IDEMPOTENCY_KEY_PATH = "gateway/idempotency"
# The key that seals list cursors (PM_CURSOR_KEY), readable by every service (platform/*).
CURSOR_KEY_PATH = "platform/cursor"
# The reply-address HMAC key delivery signs and the inbox verifies (libs/common/reply_tokens.py).
REPLY_TOKEN_KEY_PATH = "platform/reply-token"  # noqa: S105 (a Vault path)
PRIVATE_FIELD = "private_key"
PUBLIC_FIELD = "public_keys"
APPROLE_TTL = "1h"
APPROLE_MAX_TTL = "24h"
_VAULT_ATTEMPTS = 5

# Two distinct keys: the target database may be the admin database itself, and a session
# must not wait on the lock it already holds through its other connection.
_CLUSTER_LOCK_KEY = 0x706D_0001  # "pm" + 1: roles and databases (cluster-wide objects)
_DATABASE_LOCK_KEY = 0x706D_0002  # "pm" + 2: schemas, grants inside the target database

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ProvisionError(RuntimeError):
    """Provisioning could not complete (bad name, missing policy file, Vault refused, ...)."""


def role_name(service: str) -> str:
    """The Postgres LOGIN role of a service: `pm_<svc>`."""
    return f"pm_{service}"


def approle_name(service: str) -> str:
    """The Vault AppRole (and policy) name of a service: `pm-<svc>`."""
    return f"pm-{service}"


def _ident(name: str) -> str:
    # Names come from code, not users; still refuse anything that would need quoting.
    if not _IDENTIFIER.match(name):
        raise ProvisionError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def _literal(value: str) -> str:
    # DDL takes no bind parameters; standard_conforming_strings is on since PG 9.1.
    return "'" + value.replace("'", "''") + "'"


async def provision_database(
    admin_dsn: str,
    database: str = "pm",
    services: Iterable[str] = SCHEMA_SERVICES,
    passwords: Mapping[str, str] | None = None,
) -> None:
    """Create `database`, and per service role `pm_<svc>` owning schema `<svc>`; idempotent.

    `admin_dsn` must connect as a superuser (or a role with CREATEDB and CREATEROLE that
    owns `database`). A role's password is set only when `passwords` has one for it, so a
    run without passwords never resets what another run set.
    """
    services = list(services)
    passwords = dict(passwords or {})
    db_ident = _ident(database)
    roles = {svc: _ident(role_name(svc)) for svc in services}
    schemas = {svc: _ident(svc) for svc in services}

    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", _CLUSTER_LOCK_KEY)
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Suppressed: made meanwhile by a provisioner locking through another admin database.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await admin.execute(f"CREATE DATABASE {db_ident}")
        for svc in services:
            await _ensure_role(admin, role_name(svc), roles[svc], passwords.get(svc))
        await admin.execute(f"REVOKE CONNECT ON DATABASE {db_ident} FROM PUBLIC")
        # No JIT in the platform's database: its statements are short OLTP ones, and one whose
        # estimated cost passes `jit_above_cost` (delivery's fair claim over an analyzed
        # 20,000-message backlog: the planner cannot size its LIMITs) compiled ~60 ms of LLVM
        # code on every execution of a ~35 ms statement (docs/sending.md). A database default:
        # it holds behind PgBouncer too, which refuses unknown startup parameters.
        await admin.execute(f"ALTER DATABASE {db_ident} SET jit = off")
        for svc in services:
            await admin.execute(f"GRANT CONNECT ON DATABASE {db_ident} TO {roles[svc]}")
            await admin.execute(f"ALTER ROLE {roles[svc]} SET search_path = {schemas[svc]}")

        target = await asyncpg.connect(admin_dsn, database=database)
        try:
            await target.execute("SELECT pg_advisory_lock($1)", _DATABASE_LOCK_KEY)
            async with target.transaction():
                await target.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                for svc in services:
                    await target.execute(
                        f"CREATE SCHEMA IF NOT EXISTS {schemas[svc]} AUTHORIZATION {roles[svc]}"
                    )
                    # A schema made earlier by someone else still ends up owned by the role.
                    await target.execute(f"ALTER SCHEMA {schemas[svc]} OWNER TO {roles[svc]}")
                    await target.execute(f"REVOKE ALL ON SCHEMA {schemas[svc]} FROM PUBLIC")
        finally:
            await target.close()
    finally:
        await admin.close()  # closing the session releases its advisory lock


async def _ensure_role(
    conn: asyncpg.Connection, name: str, ident: str, password: str | None
) -> None:
    attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    if password is not None:
        attrs += f" PASSWORD {_literal(password)}"
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    async with conn.transaction():
        if password is not None:
            # Keep the password out of the server log even when log_statement = 'all'.
            await conn.execute("SET LOCAL log_statement = 'none'")
        verb = "ALTER" if exists else "CREATE"
        await conn.execute(f"{verb} ROLE {ident} WITH {attrs}")


def service_dsn(
    base_dsn: str, service: str, database: str = "pm", password: str | None = None
) -> str:
    """`postgresql://pm_<svc>[:pw]@host:port/<database>` on the base DSN's host, port, query.

    The query string (e.g. `sslmode=require`) is kept; the base DSN's user, password and
    database are not.
    """
    parts = urlsplit(base_dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ProvisionError(f"not a PostgreSQL DSN: scheme {parts.scheme!r}")
    hostport = parts.netloc.rpartition("@")[2]
    user = quote(role_name(service), safe="")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return urlunsplit(("postgresql", f"{auth}@{hostport}", "/" + quote(database), parts.query, ""))


def provision_vault(
    addr: str,
    root_token: str,
    services: Iterable[str] = SERVICE_NAMES,
    *,
    policy_dir: Path = POLICY_DIR,
    keep_secret_ids: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, tuple[str, str]]:
    """Set up KV mounts, per-service policies and AppRoles; return svc -> (role_id, secret_id).

    Idempotent. A secret_id in `keep_secret_ids` that is still valid for its role is
    returned as is (so re-running does not change running processes' credentials);
    otherwise a new one is generated. Also generates the principal and access-token key pairs
    if absent (a present private key is kept; its public half is added to the public set).
    """
    services = list(services)
    client = hvac.Client(url=addr, token=root_token, timeout=timeout)
    try:
        if not client.is_authenticated():
            raise ProvisionError(f"Vault at {addr} rejected the root token")
        for attempt in range(1, _VAULT_ATTEMPTS + 1):
            try:
                return _provision_vault_once(client, services, policy_dir, keep_secret_ids or {})
            except hvac.exceptions.InternalServerError as exc:
                # OpenBao's storage transactions are optimistic: two provisioners writing
                # the same role conflict ("transaction commit failed"). Every step is
                # idempotent, so the whole run is simply tried again.
                if "transaction commit failed" not in str(exc) or attempt == _VAULT_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt + secrets.randbelow(100) / 1000)
        raise AssertionError("unreachable")
    except hvac.exceptions.VaultError as exc:
        raise ProvisionError(f"Vault at {addr}: {type(exc).__name__}: {exc}") from exc
    finally:
        client.adapter.close()


def _provision_vault_once(
    client: hvac.Client,
    services: list[str],
    policy_dir: Path,
    keep_secret_ids: Mapping[str, str],
) -> dict[str, tuple[str, str]]:
    _ensure_kv_v2(client, KV_MOUNT)
    if "keys" in services:
        _ensure_kv_v2(client, API_KEYS_MOUNT)
    _ensure_approle_auth(client)
    _ensure_key_pair(client, PRINCIPAL_PRIVATE_PATH, PRINCIPAL_PUBLIC_PATH)
    _ensure_key_pair(client, USER_TOKEN_PRIVATE_PATH, USER_TOKEN_PUBLIC_PATH)
    _ensure_random_secret(client, IDEMPOTENCY_KEY_PATH, "key")
    _ensure_random_secret(client, CURSOR_KEY_PATH, "key")
    _ensure_random_secret(client, REPLY_TOKEN_KEY_PATH, "key")

    creds: dict[str, tuple[str, str]] = {}
    for svc in services:
        name = approle_name(svc)
        policy_file = policy_dir / f"{svc}.hcl"
        if not policy_file.is_file():
            raise ProvisionError(f"no Vault policy for service {svc!r}: {policy_file}")
        client.sys.create_or_update_policy(name=name, policy=policy_file.read_text())
        client.auth.approle.create_or_update_approle(
            role_name=name,
            token_policies=[name],
            token_ttl=APPROLE_TTL,
            token_max_ttl=APPROLE_MAX_TTL,
            # Service tokens are renewable; batch tokens are not.
            token_type="service",  # noqa: S106
            mount_point=APPROLE_MOUNT,
        )
        role_id = str(client.auth.approle.read_role_id(name)["data"]["role_id"])
        kept = keep_secret_ids.get(svc)
        if kept and _secret_id_valid(client, name, kept):
            secret_id = kept
        else:
            resp = client.auth.approle.generate_secret_id(name, mount_point=APPROLE_MOUNT)
            secret_id = str(resp["data"]["secret_id"])
        creds[svc] = (role_id, secret_id)
    return creds


def _ensure_kv_v2(client: hvac.Client, mount: str) -> None:
    mounts: dict[str, Any] = client.sys.list_mounted_secrets_engines()["data"]
    current = mounts.get(f"{mount}/")
    if current is None:
        try:
            client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
        except hvac.exceptions.InvalidRequest:
            # Another provisioner mounted it between our list and enable: fine if kv.
            current = client.sys.list_mounted_secrets_engines()["data"].get(f"{mount}/")
            if current is None:
                raise
    if current is not None:
        if current.get("type") != "kv":
            raise ProvisionError(f"Vault mount {mount}/ is {current.get('type')!r}, not kv")
        if (current.get("options") or {}).get("version") != "2":
            # A kv v1 mount (e.g. `bao server -dev` older than 0.10) upgrades in place.
            client.sys.tune_mount_configuration(path=mount, options={"version": "2"})


def _ensure_approle_auth(client: hvac.Client) -> None:
    methods: dict[str, Any] = client.sys.list_auth_methods()["data"]
    if f"{APPROLE_MOUNT}/" in methods:
        return
    try:
        client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)
    except hvac.exceptions.InvalidRequest:
        if f"{APPROLE_MOUNT}/" not in client.sys.list_auth_methods()["data"]:
            raise


def _secret_id_valid(client: hvac.Client, role: str, secret_id: str) -> bool:
    # The lookup answers 204 (a bare Response, not a dict) for an unknown secret_id.
    resp = client.auth.approle.read_secret_id(role, secret_id, mount_point=APPROLE_MOUNT)
    return isinstance(resp, dict) and bool(resp.get("data"))


def _read_kv(client: hvac.Client, path: str) -> tuple[dict[str, Any], int]:
    try:
        resp = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=KV_MOUNT, raise_on_deleted_version=False
        )
    except hvac.exceptions.InvalidPath:
        resp = None
    data: dict[str, Any] = dict(((resp or {}).get("data") or {}).get("data") or {})
    version = int((((resp or {}).get("data") or {}).get("metadata") or {}).get("version") or 0)
    return data, version


def _ensure_random_secret(client: hvac.Client, path: str, field: str) -> None:
    data, version = _read_kv(client, path)
    if data.get(field):
        return
    data[field] = secrets.token_urlsafe(32)
    with contextlib.suppress(hvac.exceptions.InvalidRequest):  # a concurrent run won
        client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, cas=version, mount_point=KV_MOUNT
        )


def _ensure_key_pair(client: hvac.Client, private_path: str, public_path: str) -> None:
    kv = client.secrets.kv.v2
    data, version = _read_kv(client, private_path)
    if not data.get(PRIVATE_FIELD):
        data[PRIVATE_FIELD] = generate_private_key()
        # check-and-set: of two concurrent provisioners only the first key is kept.
        with contextlib.suppress(hvac.exceptions.InvalidRequest):
            kv.create_or_update_secret(
                path=private_path, secret=data, cas=version, mount_point=KV_MOUNT
            )
        data, _ = _read_kv(client, private_path)
    public = public_keys_of(str(data[PRIVATE_FIELD]))
    for _attempt in range(_VAULT_ATTEMPTS):
        pub_data, pub_version = _read_kv(client, public_path)
        current = [e.strip() for e in str(pub_data.get(PUBLIC_FIELD) or "").split(",") if e.strip()]
        if public in current:
            return
        # Keep the keys already published (a rotation in progress), add the current one.
        pub_data[PUBLIC_FIELD] = ",".join([*current, public])
        try:
            kv.create_or_update_secret(
                path=public_path, secret=pub_data, cas=pub_version, mount_point=KV_MOUNT
            )
            return
        except hvac.exceptions.InvalidRequest:
            continue


# ------------------------------------------------------------------------ Redis ACL users

# Key patterns per service (`{ns}` = PM_REDIS_NAMESPACE). Redis is shared, so each service
# gets its own ACL user reaching only its own keys: a compromised service cannot rewrite the
# gateway's caches or rate limits. The `default` user is left alone (other tools on the host
# use it). Services without Redis state get a user that reaches no key.
REDIS_KEY_PATTERNS: dict[str, tuple[str, ...]] = {
    "gateway": (
        "~{ns}:gw:*",
        "~{ns}:rl:*",
        "~{ns}:idem:*",
        "~{ns}:usage:*",
        # Logout marks written by keys; read in the rate-limit script, and Redis requires
        # read-write access to every key a script names.
        "~{ns}:auth:revoked_sid:*",
        "&{ns}:gw:evict",
    ),
    "keys": ("~{ns}:usage:*", "~{ns}:auth:*", "~{ns}:login:*", "~{ns}:signup:*"),
    "delivery": ("~pm:delivery:*",),  # services/delivery/throttle.py's fixed prefix
    "campaigns": (),
    "webhooks": (),
    "billing": (),
    "inbox": (),
}
REDIS_COMMANDS = ("+@all", "-@dangerous")


def redis_user_name(service: str, namespace: str, suffix: str = "") -> str:
    """`<namespace>-<service>`; a `suffix` keeps another stack's users on the same Redis apart
    (ACL users are server-wide: a second stack resetting `pm-delivery` to its own password
    locks the first one's processes out)."""
    return f"{namespace}-{service}{suffix}"


def redis_acl_rules(service: str, namespace: str, password: str) -> list[str]:
    """`ACL SETUSER` arguments for `service`: reset, enable, its password, its keys and
    channels, every command but the dangerous ones (no FLUSHALL, KEYS, CONFIG, ACL, ...)."""
    patterns = [p.format(ns=namespace) for p in REDIS_KEY_PATTERNS[service]]
    return ["reset", "on", f">{password}", *patterns, *REDIS_COMMANDS]


def _save_acl(client: Any) -> None:
    """`ACL SAVE`: users set with `ACL SETUSER` live in memory only, so a Redis restarted
    without them would refuse every service (AuthenticationError) until provisioned again. A
    server started with an `aclfile` keeps them there; one without an aclfile (the machine's
    plain dev Redis) answers an error, and `make up` provisions again after its restart."""
    from redis.exceptions import ResponseError

    try:
        client.execute_command("ACL", "SAVE")
    except ResponseError as exc:
        if "aclfile" not in str(exc).lower() and "acl file" not in str(exc).lower():
            raise


def provision_redis_users(
    admin_url: str, namespace: str, passwords: Mapping[str, str], user_suffix: str = ""
) -> dict[str, str]:
    """Create or update one ACL user per service in `passwords` (idempotent: `reset` first);
    returns service -> Redis URL with that user's credentials."""
    import redis as redis_sync

    client = redis_sync.Redis.from_url(admin_url)
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    try:
        urls = {}
        for service, password in passwords.items():
            if service not in REDIS_KEY_PATTERNS:
                raise ProvisionError(f"no Redis key patterns for service {service!r}")
            user = redis_user_name(service, namespace, user_suffix)
            rules = redis_acl_rules(service, namespace, password)
            client.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]
            auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
            urls[service] = urlunsplit(("redis", f"{auth}@{host}:{port}", parts.path, "", ""))
        _save_acl(client)
        return urls
    finally:
        client.close()
