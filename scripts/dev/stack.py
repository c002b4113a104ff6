# ruff: noqa: S603, S607  (this script runs the repository's own commands)
"""The local dev stack: infrastructure, provisioning, migrations and every service process.

    uv run python -m scripts.dev.stack up        start (or update) the whole stack
    uv run python -m scripts.dev.stack down      stop it, and what infra.sh started
    uv run python -m scripts.dev.stack status    processes and their readiness
    uv run python -m scripts.dev.stack migrate   provision + migrate only
    python -m scripts.dev.stack provision --secrets-dir DIR   docker-compose's one-shot job
    uv run python -m scripts.dev.stack compose > docker-compose.yml

`up` runs `scripts/dev/infra.sh ensure`, provisions Postgres and Vault
(`libs/common/provision.py`), migrates every service with its own role, and runs one
supervisord program per (service, process) of the `PROCESSES` dicts, each with its own
database role and Vault AppRole, plus the local stand-ins for third parties (`DevTool`): the
fake Stripe (`tests/fakes/stripe.py`) billing talks to, and the SMTP capture
(`scripts/dev/mail_capture.py`) live-mode mail goes to. Its state lives in `.dev/`
(gitignored): the Vault root token, role passwords, AppRole secret ids and the fakes' keys
(`provision.json`), `supervisord.conf`, logs, captured mail.

Settings: every process gets the stack's own (`service_env`, `dev_settings`), then
`.dev/overrides.env`, then the caller's `PM_*` variables (`read_overrides`): e.g.
`PM_WEBHOOKS_RETRY_SCHEDULE='[1,1]' make up`. What the stack hands out per process (database
DSN, AppRole, port) cannot be overridden.

`PM_DEV_DIR=<dir> PM_DEV_PORT_OFFSET=<n>` run a second, separate instance (state in <dir>,
every port shifted by n) against the infrastructure named by PM_ADMIN_DATABASE_URL,
PM_DATABASE_NAME, PM_AMQP_URL, PM_REDIS_URL, PM_VAULT_ADDR and PM_VAULT_ROOT_TOKEN; such an
instance never starts or stops that infrastructure (the getting-started test uses this when
no `make up` stack runs).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import httpx
from redis.exceptions import RedisError

from libs.common.amqp_users import provision_amqp_users
from libs.common.db import migrations_dirs
from libs.common.provision import (
    provision_database,
    provision_redis_users,
    provision_vault,
    service_dsn,
)
from libs.common.settings import SCHEMA_SERVICES, SERVICE_NAMES, default_port

ROOT = Path(__file__).resolve().parents[2]
# `make up` keeps its state in .dev and uses the port plan as is; a separate instance (see the
# module docstring) has its own directory and shifted ports, and brings no infrastructure.
DEV = Path(os.environ.get("PM_DEV_DIR") or ROOT / ".dev").resolve()
PORT_OFFSET = int(os.environ.get("PM_DEV_PORT_OFFSET") or 0)
OWNS_INFRA = not os.environ.get("PM_DEV_DIR")
LOGS = DEV / "logs"
INFRA_SH = ROOT / "scripts" / "dev" / "infra.sh"
SUPERVISOR_CONF = DEV / "supervisord.conf"
STACK_ENV = DEV / "stack.env"
OVERRIDES_FILE = DEV / "overrides.env"
READY_TIMEOUT_SECONDS = 300.0  # ~20 Python processes start; a loaded machine is slow
REDIS_NAMESPACE = "pm"  # PM_REDIS_NAMESPACE's default: the ACL users' key patterns use it
# Token keys (libs/common/provision.py generates them): every process reads the public
# halves; only the minting service gets its private key (its Vault policy alone allows it).
TOKEN_KEY_ENV: dict[str, dict[str, str]] = {
    "*": {
        "PM_PRINCIPAL_PUBLIC_KEYS": "vault:secret/platform/principal#public_keys",
        "PM_CURSOR_KEY": "vault:secret/platform/cursor#key",
    },
    "gateway": {
        "PM_PRINCIPAL_PRIVATE_KEY": "vault:secret/gateway/principal#private_key",
        "PM_USER_TOKEN_PUBLIC_KEYS": "vault:secret/platform/user-token#public_keys",
        "PM_IDEMPOTENCY_ENCRYPTION_KEY": "vault:secret/gateway/idempotency#key",
    },
    "keys": {"PM_USER_TOKEN_PRIVATE_KEY": "vault:secret/keys/user-token#private_key"},
    "delivery": {"PM_REPLY_TOKEN_KEY": "vault:secret/platform/reply-token#key"},
    "inbox": {"PM_REPLY_TOKEN_KEY": "vault:secret/platform/reply-token#key"},
}
# Variables a developer's shell may carry that must not leak into service processes
# (the caller's PM_* settings reach them on purpose, through `read_overrides`).
_FOREIGN_ENV_PREFIXES = ("PM_", "VAULT_", "BAO_")
# Handed out per process by the stack: an override would give a process another's
# credentials or port (e.g. PM_DATABASE_URL from a sourced .dev/stack.env is the admin DSN,
# its PM_REDIS_URL not the service's own Redis user).
_STACK_OWNED = (
    "PM_DATABASE_URL",
    "PM_REDIS_URL",
    "PM_VAULT_ROLE_ID",
    "PM_VAULT_SECRET_ID",
    "PM_VAULT_TOKEN",
    "PM_HTTP_HOST",
    "PM_HTTP_PORT",
)
# The stack script's own inputs (admin credentials, instance layout): never given to a process.
_STACK_INPUTS = (
    "PM_ADMIN_DATABASE_URL",
    "PM_DATABASE_NAME",
    "PM_VAULT_ROOT_TOKEN",
    "PM_VAULT_PORT",
    "PM_DEV_DIR",
    "PM_DEV_PORT_OFFSET",
)


def port_of(service: str, process: str) -> int:
    """The port of a process in this instance: the port plan, shifted for a second instance."""
    return default_port(service, process) + PORT_OFFSET


GATEWAY_URL = f"http://127.0.0.1:{port_of('gateway', 'api')}"
# Without bytecode caches every process compiles FastAPI, OpenTelemetry... at each start.
_DROPPED_ENV = ("PYTHONDONTWRITEBYTECODE",)


class StackError(RuntimeError):
    """The stack could not be brought to the asked state; the message says why."""


@dataclass(frozen=True)
class Infra:
    """Where the shared infrastructure is and the admin credentials for it."""

    admin_dsn: str
    database: str
    amqp_url: str
    redis_url: str
    vault_addr: str
    vault_token: str

    @classmethod
    def from_env(cls, token_file: Path | None = DEV / "vault-root-token") -> Infra:
        """From PM_* variables, else this checkout's files (OpenBao: token and address that
        infra.sh wrote; another checkout's OpenBao may hold 8200)."""
        env = os.environ
        token = env.get("PM_VAULT_ROOT_TOKEN", "")
        if not token and token_file is not None and token_file.is_file():
            token = token_file.read_text().strip()
        if not token:
            raise StackError("no Vault root token: set PM_VAULT_ROOT_TOKEN or run infra.sh ensure")
        addr_file = None if token_file is None else token_file.parent / "vault-addr"
        vault_addr = env.get("PM_VAULT_ADDR", "")
        if not vault_addr and addr_file is not None and addr_file.is_file():
            vault_addr = addr_file.read_text().strip()
        return cls(
            admin_dsn=env.get(
                "PM_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
            database=env.get("PM_DATABASE_NAME", "pm"),
            amqp_url=env.get("PM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            redis_url=env.get("PM_REDIS_URL", "redis://127.0.0.1:6379/0"),
            vault_addr=vault_addr or "http://127.0.0.1:8200",
            vault_token=token,
        )


@dataclass
class Provisioned:
    """What provisioning handed out; kept in a JSON file so a re-run changes nothing."""

    db_passwords: dict[str, str] = field(default_factory=dict)
    approles: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Credentials of the local fakes (fake Stripe's API keys and webhook secrets).
    fakes: dict[str, str] = field(default_factory=dict)
    # Per-service Redis ACL users (password, and the URL provisioning derived from it).
    redis_passwords: dict[str, str] = field(default_factory=dict)
    redis_urls: dict[str, str] = field(default_factory=dict)
    # Per-service RabbitMQ users (libs/common/amqp_users.py) in the stack's own vhost.
    amqp_passwords: dict[str, str] = field(default_factory=dict)
    amqp_urls: dict[str, str] = field(default_factory=dict)
    # The stack's vhost with the admin (guest) credentials: admin commands, stack.env.
    amqp_admin_url: str = ""

    @classmethod
    def load(cls, path: Path) -> Provisioned:
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        return cls(
            db_passwords=dict(raw.get("db_passwords", {})),
            approles={k: (v[0], v[1]) for k, v in raw.get("approles", {}).items()},
            fakes=dict(raw.get("fakes", {})),
            redis_passwords=dict(raw.get("redis_passwords", {})),
            amqp_passwords=dict(raw.get("amqp_passwords", {})),
        )

    def save(self, path: Path) -> None:
        body = {
            "db_passwords": self.db_passwords,
            "approles": self.approles,
            "fakes": self.fakes,
            "redis_passwords": self.redis_passwords,
            "amqp_passwords": self.amqp_passwords,
        }
        _write_private(path, json.dumps(body, indent=2, sort_keys=True) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _clean_environ() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_FOREIGN_ENV_PREFIXES) and k not in _DROPPED_ENV
    }


# --------------------------------------------------------------------------- processes


def has_main(service: str) -> bool:
    return (ROOT / "services" / service / "__main__.py").is_file()


# A service whose import fails here is tried again in an interpreter of its own, as it runs
# in production: two services loaded in one process may clash on process-wide registries
# (error codes, metrics), which says nothing about either of them.
_LIST_PROCESSES = (
    "import importlib, json, sys; "
    "main = importlib.import_module(f'services.{sys.argv[1]}.__main__'); "
    "print(json.dumps(list(main.PROCESSES)))"
)


def _processes_isolated(service: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _LIST_PROCESSES, service],
        cwd=ROOT,
        env=_clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise StackError((result.stderr.strip().splitlines() or ["(no output)"])[-1])
    return [str(name) for name in json.loads(lines[-1])]


def discover_processes() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Every (service, process) from the PROCESSES dicts, and services that failed to import."""
    found: list[tuple[str, str]] = []
    broken: dict[str, str] = {}
    for svc in SERVICE_NAMES:
        if not has_main(svc):
            continue
        try:
            names = list(importlib.import_module(f"services.{svc}.__main__").PROCESSES)
        except Exception:
            try:
                names = _processes_isolated(svc)
            except StackError as exc:
                broken[svc] = str(exc)
                continue
        found.extend((svc, name) for name in names)
    return found, broken


def program_name(service: str, process: str) -> str:
    return f"{service}-{process}"


def service_env(
    infra: Infra, prov: Provisioned, service: str, process: str | None = None
) -> dict[str, str]:
    """The PM_* environment of one process (or of the service's admin commands)."""
    role_id, secret_id = prov.approles[service]
    env = {
        "PM_ENVIRONMENT": "dev",
        # Its own RabbitMQ user: publishes only its own event types, reads its own queues.
        "PM_AMQP_URL": prov.amqp_urls.get(service, prov.amqp_admin_url or infra.amqp_url),
        # The service's own Redis ACL user (provision), reaching only its own keys.
        "PM_REDIS_URL": prov.redis_urls.get(service, infra.redis_url),
        "PM_VAULT_ADDR": infra.vault_addr,
        "PM_VAULT_ROLE_ID": role_id,
        "PM_VAULT_SECRET_ID": secret_id,
        **TOKEN_KEY_ENV["*"],
        **TOKEN_KEY_ENV.get(service, {}),
    }
    if service in SCHEMA_SERVICES:
        env["PM_DATABASE_URL"] = service_dsn(
            infra.admin_dsn, service, infra.database, prov.db_passwords.get(service)
        )
    if process is not None:
        env["PM_HTTP_HOST"] = "127.0.0.1"
        env["PM_HTTP_PORT"] = str(port_of(service, process))
    return env


# ------------------------------------------------------------- dev settings and overrides


def dev_settings(service: str, process: str | None = None) -> dict[str, str]:
    """What the dev stack sets beyond service_env (production defaults stay as they are) for
    `service`'s `process` (None: what every process of it gets).

    - gateway: the upstreams of this instance's port plan.
    - webhooks: endpoints may be `http://` and loopback (127.0.0.0/8, ::1), so a receiver on
      the developer's machine works; other private, link-local and metadata addresses stay
      refused.
    - billing: Stripe is the fake Stripe (`FAKE_STRIPE`), keys and webhook secrets from Vault
      at the production paths; Checkout returns to the dashboard the gateway serves.
    - delivery: live-mode mail goes over SMTP to the mail capture (credentials in Vault at
      the platform's `penguinmails/api-keys/smtp`); test-mode mail stays in the sandbox;
      sending domains verify against the fake Cloudflare's DNS server (`FAKE_CLOUDFLARE`);
      messages without their own Reply-To get `reply+<token>@DEV_REPLY_DOMAIN`; its api and
      worker pools at 3, so its express process's 2 keep the stack within its share.
    - inbox: the inbound SMTP listener on 127.0.0.1:INBOUND_SMTP_PORT accepts mail for
      DEV_REPLY_DOMAIN (host and port also in .dev/stack.env).
    """
    if service == "gateway":
        return {
            f"PM_{svc.upper()}_URL": f"http://127.0.0.1:{port_of(svc, 'api')}"
            for svc in SERVICE_NAMES
            if svc != "gateway"
        }
    if service == "webhooks":
        # The stream process's connection comes out of the worker's pool (4 -> 3), whose queue
        # it was, so the stack stays within its share of a default Postgres
        # (docs/operations.md "Connection budget").
        pools = {"PM_DB_POOL_MAX": "3"} if process == "worker" else {}
        return {
            **pools,
            "PM_WEBHOOKS_ALLOW_HTTP": "true",
            "PM_WEBHOOKS_ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]',
        }
    paths = fake_vault_paths()
    if service == "billing":
        stripe, hook = f"vault:secret/{paths['stripe']}", f"vault:secret/{paths['stripe_webhook']}"
        return {
            "PM_STRIPE_API_BASE": FAKE_STRIPE.url,
            "PM_STRIPE_SECRET_KEY": f"{stripe}#value",
            "PM_STRIPE_TEST_SECRET_KEY": f"{stripe}#test_value",
            "PM_STRIPE_WEBHOOK_SECRET": f"{hook}#value",
            "PM_STRIPE_TEST_WEBHOOK_SECRET": f"{hook}#test_value",
            "PM_DASHBOARD_URL": GATEWAY_URL,
        }
    if service == "inbox":
        return {
            "PM_REPLY_DOMAINS": f'["{DEV_REPLY_DOMAIN}"]',
            # Replies trickle in on a dev machine: small pools keep the stack within its
            # share of a default Postgres (docs/operations.md "Connection budget").
            "PM_DB_POOL_MAX": "2",
            "PM_INBOUND_SMTP_HOST": "127.0.0.1",
            "PM_INBOUND_SMTP_PORT": str(INBOUND_SMTP_PORT),
        }
    if service == "delivery":
        # The express process's pool (2) comes out of the api's and the worker's (4 -> 3
        # each) so the stack stays within its share of a default Postgres (docs/operations.md
        # "Connection budget"): a dev machine's mail trickles.
        pools = {"PM_DB_POOL_MAX": "3"} if process in ("api", "worker") else {}
        return {
            **pools,
            "PM_REPLY_DOMAIN": DEV_REPLY_DOMAIN,
            "PM_FORCE_SANDBOX": "false",
            "PM_DEFAULT_ROUTES": '{"transactional": ["smtp"], "marketing": ["smtp"]}',
            "PM_ESP_CREDENTIALS_PATH": paths["esp"],
            "PM_TRACKING_BASE_URL": GATEWAY_URL,
            # Sending domains verify against the fake Cloudflare's DNS server; publishing
            # through its API (the token in .dev/stack.env) makes the records resolvable.
            "PM_DNS_RESOLVERS": f"127.0.0.1:{DNS_PORT}",
            "PM_CLOUDFLARE_BASE_URL": f"{FAKE_CLOUDFLARE.url}/client/v4",
        }
    return {}


def fake_vault_paths() -> dict[str, str]:
    """Where the fakes' credentials live in Vault (KV mount `secret`).

    `make up`: the production paths, which the services' policies allow (billing:
    penguinmails/api-keys/stripe and penguinmails/webhooks/stripe; delivery: the platform ESP
    path penguinmails/api-keys/<provider>). A separate instance may share its Vault with other
    stacks and test sessions: it writes under billing's and delivery's own paths instead.
    """
    if OWNS_INFRA:
        return {
            "stripe": "penguinmails/api-keys/stripe",
            "stripe_webhook": "penguinmails/webhooks/stripe",
            "esp": "penguinmails/api-keys",
        }
    tag = f"dev-{DEV.name}"
    return {
        "stripe": f"billing/{tag}/stripe",
        "stripe_webhook": f"billing/{tag}/stripe-webhook",
        "esp": f"delivery/{tag}/esp",
    }


def parse_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines (`export ` and one pair of surrounding quotes allowed, # comments)."""
    out: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.startswith("PM_"):
            raise StackError(f"{path}:{number}: expected PM_NAME=value, got {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def read_overrides(
    path: Path = OVERRIDES_FILE, environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, str], list[str]]:
    """Settings for every process: `.dev/overrides.env`, then the caller's PM_* variables
    (which win). Returns them and the names refused (the stack hands those out itself)."""
    merged = parse_env_file(path) if path.is_file() else {}
    merged.update(
        {
            k: v
            for k, v in environ.items()
            # PM_TEST_* configure the test suite (and may hold its root token), not services.
            if k.startswith("PM_") and not k.startswith("PM_TEST_") and k not in _STACK_INPUTS
        }
    )
    refused = sorted(k for k in merged if k in _STACK_OWNED)
    return {k: v for k, v in merged.items() if k not in _STACK_OWNED}, refused


def process_env(
    infra: Infra,
    prov: Provisioned,
    service: str,
    process: str | None,
    overrides: Mapping[str, str],
) -> dict[str, str]:
    """A process's environment: the stack's settings, dev settings, then the overrides."""
    return {
        **service_env(infra, prov, service, process),
        **dev_settings(service, process),
        **overrides,
    }


# ------------------------------------------------------------------- third-party fakes


@dataclass(frozen=True)
class DevTool:
    """A program of the dev stack that is not a service: a local stand-in for a third party
    on the internet. It answers GET /readyz on `port` once it serves."""

    name: str
    module: str
    port: int
    label: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


FAKE_STRIPE = DevTool(
    "fake-stripe", "tests.fakes.stripe", 8700 + PORT_OFFSET, "fake Stripe (no real payments)"
)
MAIL_CAPTURE = DevTool(
    "mail-capture", "scripts.dev.mail_capture", 8701 + PORT_OFFSET, "mail capture (live mode)"
)
MAIL_SMTP_PORT = 8725 + PORT_OFFSET
# The inbox's inbound SMTP listener (its MX in production) and the reply domain it accepts.
INBOUND_SMTP_PORT = 8726 + PORT_OFFSET
DEV_REPLY_DOMAIN = "reply.penguinmails.localhost"
FAKE_CLOUDFLARE = DevTool(
    "fake-cloudflare",
    "tests.fakes.cloudflare",
    8702 + PORT_OFFSET,
    "fake Cloudflare DNS API and authoritative DNS (sending domains)",
)
DNS_PORT = 8753 + PORT_OFFSET  # UDP and TCP: what delivery verifies sending domains against
DEV_TOOLS = (FAKE_STRIPE, MAIL_CAPTURE, FAKE_CLOUDFLARE)


def fake_credentials(prov: Provisioned) -> dict[str, str]:
    """The fake Stripe's API keys and webhook secrets: made once, kept in provision.json
    (billing reads them from Vault, the fake from its environment)."""
    made = {
        "stripe_live_key": f"sk_live_fake_{secrets.token_hex(16)}",
        "stripe_test_key": f"sk_test_fake_{secrets.token_hex(16)}",
        "stripe_live_whsec": f"whsec_{secrets.token_hex(24)}",
        "stripe_test_whsec": f"whsec_{secrets.token_hex(24)}",
        "cloudflare_token": f"cf-fake-{secrets.token_hex(16)}",
    }
    for name, value in made.items():
        prov.fakes.setdefault(name, value)
    return prov.fakes


def dev_tool_command(tool: DevTool) -> list[str]:
    hook = f"{GATEWAY_URL}/hooks/stripe"
    if tool is FAKE_STRIPE:
        return [sys.executable, "-m", tool.module, "--port", str(tool.port), "--webhook-url", hook]
    if tool is FAKE_CLOUDFLARE:
        port, dns = str(tool.port), str(DNS_PORT)
        return [
            sys.executable,
            "-m",
            tool.module,
            "--port",
            port,
            "--dns-port",
            dns,
            "--auto-zones",
        ]
    return [
        sys.executable,
        "-m",
        tool.module,
        "serve",
        "--http-port",
        str(tool.port),
        "--smtp-port",
        str(MAIL_SMTP_PORT),
        "--dir",
        str(DEV / "mail"),
    ]


def dev_tool_env(tool: DevTool, prov: Provisioned) -> dict[str, str]:
    """Secrets go through the environment, not the command line (`ps` shows that)."""
    if tool is FAKE_CLOUDFLARE:
        return {"FAKE_CLOUDFLARE_TOKEN": fake_credentials(prov)["cloudflare_token"]}
    if tool is not FAKE_STRIPE:
        return {}
    creds = fake_credentials(prov)
    return {
        "FAKE_STRIPE_LIVE_KEY": creds["stripe_live_key"],
        "FAKE_STRIPE_TEST_KEY": creds["stripe_test_key"],
        "FAKE_STRIPE_WEBHOOK_SECRET": creds["stripe_live_whsec"],
        "FAKE_STRIPE_TEST_WEBHOOK_SECRET": creds["stripe_test_whsec"],
    }


def write_fake_secrets(infra: Infra, prov: Provisioned) -> None:
    """Put the fakes' credentials where production keeps the real ones (`fake_vault_paths`)."""
    from libs.common.vault import make_client

    creds = fake_credentials(prov)
    paths = fake_vault_paths()
    client = make_client(infra.vault_addr, token=infra.vault_token)
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(
        path=paths["stripe"],
        secret={"value": creds["stripe_live_key"], "test_value": creds["stripe_test_key"]},
        mount_point="secret",
    )
    kv.create_or_update_secret(
        path=paths["stripe_webhook"],
        secret={"value": creds["stripe_live_whsec"], "test_value": creds["stripe_test_whsec"]},
        mount_point="secret",
    )
    kv.create_or_update_secret(
        path=f"{paths['esp']}/smtp",
        secret={"host": "127.0.0.1", "port": MAIL_SMTP_PORT},
        mount_point="secret",
    )


# ------------------------------------------------------------------------ provisioning


def provision(infra: Infra, state_file: Path) -> Provisioned:
    """Database, roles, schemas, Vault policies and AppRoles; credentials kept in state_file."""
    prov = Provisioned.load(state_file)
    # Roles are cluster-wide: a separate instance sets no password, so it never changes the
    # ones `make up` (or production-like auth) relies on; it runs where local auth is trust.
    for svc in SCHEMA_SERVICES if OWNS_INFRA else ():
        prov.db_passwords.setdefault(svc, secrets.token_hex(24))
    try:
        asyncio.run(
            provision_database(infra.admin_dsn, infra.database, SCHEMA_SERVICES, prov.db_passwords)
        )
    except OSError as exc:
        raise StackError(f"cannot reach Postgres at {infra.admin_dsn}: {exc}") from exc
    keep = {svc: ids[1] for svc, ids in prov.approles.items()}
    prov.approles = provision_vault(
        infra.vault_addr, infra.vault_token, SERVICE_NAMES, keep_secret_ids=keep
    )
    for svc in SERVICE_NAMES:
        prov.redis_passwords.setdefault(svc, secrets.token_hex(24))
    try:
        # Adds users (ACL SETUSER); the default user, which other tools use, is untouched.
        prov.redis_urls = provision_redis_users(
            infra.redis_url, REDIS_NAMESPACE, prov.redis_passwords, redis_user_suffix(infra)
        )
    except RedisError as exc:
        raise StackError(f"cannot create Redis ACL users at {infra.redis_url}: {exc}") from exc
    prov.amqp_urls = provision_stack_amqp_users(infra, prov)
    prov.save(state_file)
    print(
        f"provisioned: database {infra.database!r} ({len(SCHEMA_SERVICES)} roles/schemas), "
        f"Vault ({len(SERVICE_NAMES)} AppRoles)"
    )
    return prov


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=120)


def redis_user_suffix(infra: Infra) -> str:
    """A separate instance (PM_DEV_DIR) names its Redis ACL users after its database
    (`pm-delivery-pm_test_123_stack`): with the same names as `make up`'s (or another
    instance's), each `up` reset the others' passwords and locked their processes out."""
    return "" if OWNS_INFRA else f"-{infra.database}"


def provision_stack_amqp_users(infra: Infra, prov: Provisioned) -> dict[str, str]:
    """One RabbitMQ user per service (`<vhost>-<service>`, libs/common/amqp_users.py) in the
    stack's own vhost: the one PM_AMQP_URL names, or, when that is the shared `/`, a vhost
    named after the database, created here (the stack's processes and stack.env move to
    it). The `guest` user keeps its permissions and gets the stack's vhost for admin
    commands (replay-dlq); `/` is never changed. Compose (no local rabbitmqctl, the broker
    its own): through the management API of PM_RABBITMQ_MANAGEMENT_URL (admin credentials),
    in PM_AMQP_URL's vhost, users `pm-<service>`; each service's URL goes to its `.env`."""
    management = os.environ.get("PM_RABBITMQ_MANAGEMENT_URL")
    if management:
        for svc in SERVICE_NAMES:
            prov.amqp_passwords.setdefault(svc, secrets.token_hex(24))
        vhost = unquote(urlsplit(infra.amqp_url).path.lstrip("/")) or "/"
        try:
            return provision_amqp_users(
                vhost, prov.amqp_passwords, amqp_url=infra.amqp_url, management_url=management
            )
        except (OSError, httpx.HTTPError) as exc:
            raise StackError(f"cannot create RabbitMQ users in vhost {vhost!r}: {exc}") from exc
    if shutil.which("rabbitmqctl") is None and not Path("/usr/sbin/rabbitmqctl").exists():
        return {}
    parts = urlsplit(infra.amqp_url)
    vhost = unquote(parts.path.lstrip("/")) or "/"
    if vhost == "/":
        vhost = infra.database
        _rabbitmqctl("add_vhost", vhost)  # fails harmlessly when it exists
        admin = unquote(parts.username or "guest")
        _rabbitmqctl("set_permissions", "-p", vhost, admin, ".*", ".*", ".*")
    prov.amqp_admin_url = urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    for svc in SERVICE_NAMES:
        prov.amqp_passwords.setdefault(svc, secrets.token_hex(24))
    try:
        return provision_amqp_users(
            vhost, prov.amqp_passwords, amqp_url=prov.amqp_admin_url, prefix=vhost
        )
    except (OSError, RuntimeError) as exc:
        raise StackError(f"cannot create RabbitMQ users in vhost {vhost!r}: {exc}") from exc


def run_migrations(infra: Infra, prov: Provisioned) -> None:
    """`python -m services.<svc> migrate` for every service with a schema, concurrently."""
    finish_migrations(start_migrations(infra, prov))


def start_migrations(
    infra: Infra, prov: Provisioned, services: Iterable[str] = SCHEMA_SERVICES
) -> dict[str, subprocess.Popen[str]]:
    running: dict[str, subprocess.Popen[str]] = {}
    for svc in services:
        if not has_main(svc):
            print(f"migrate: {svc}: no services/{svc}/__main__.py yet, skipped")
            continue
        running[svc] = subprocess.Popen(
            [sys.executable, "-m", f"services.{svc}", "migrate"],
            cwd=ROOT,
            env={**_clean_environ(), **service_env(infra, prov, svc)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return running


def services_to_migrate(infra: Infra) -> list[str]:
    """Services with a migration file whose version is not in their `schema_migrations` yet.

    Lets a repeated `up` skip five interpreter start-ups when nothing is new; on any doubt
    (no table, no connection) the service counts as pending and its `migrate` runs.
    """

    async def pending() -> list[str]:
        conn = await asyncpg.connect(infra.admin_dsn, database=infra.database)
        try:
            out = []
            for svc in SCHEMA_SERVICES:
                on_disk = {
                    f.name.split("_", 1)[0] for d in migrations_dirs(svc) for f in d.glob("*.sql")
                }
                try:
                    rows = await conn.fetch(f'SELECT version FROM "{svc}".schema_migrations')
                except asyncpg.PostgresError:
                    rows = []
                if not on_disk <= {str(r["version"]) for r in rows}:
                    out.append(svc)
            return out
        finally:
            await conn.close()

    try:
        return asyncio.run(pending())
    except (OSError, asyncpg.PostgresError):
        return list(SCHEMA_SERVICES)


def finish_migrations(running: Mapping[str, subprocess.Popen[str]]) -> None:
    failed = []
    for svc, proc in running.items():
        out, _ = proc.communicate(timeout=300)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if proc.returncode == 0:
            print(f"migrate: {svc}: {last or 'ok'}")
        else:
            failed.append(svc)
            print(f"migrate: {svc}: FAILED (exit {proc.returncode})\n{_indent(out[-3000:])}")
    if failed:
        raise StackError(f"migrations failed for: {', '.join(failed)}")


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


def run_infra_sh(command: str) -> int:
    """Run `scripts/dev/infra.sh <command>`; its messages go straight to the terminal."""
    return subprocess.run(["bash", str(INFRA_SH), command], cwd=ROOT, check=False).returncode


def infra_ensure() -> None:
    if run_infra_sh("ensure") != 0:
        raise StackError("scripts/dev/infra.sh ensure failed (see above)")


# -------------------------------------------------------------------------- supervisord


def supervisor_socket() -> Path:
    sock = DEV / "supervisor.sock"
    if len(str(sock)) > 100:  # AF_UNIX paths are limited to 108 bytes
        import hashlib

        digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
        sock = Path("/tmp") / f"pm-supervisor-{digest}.sock"  # noqa: S108
    return sock


def _sv_escape(value: str) -> str:
    # supervisord expands %(name)s in every value; a literal percent is written %%.
    return value.replace("%", "%%")


def _sv_env(env: Mapping[str, str]) -> str:
    # supervisord splits `environment` with shlex (non-POSIX): a value is quoted with double
    # quotes, or with single quotes when it holds double ones (JSON lists and dicts).
    items = []
    for key, value in sorted(env.items()):
        quote = "'" if '"' in value else '"'
        if quote in value.replace('"', "") or "\n" in value or ("'" in value and '"' in value):
            raise StackError(f"{key}: value cannot be written in supervisord.conf")
        items.append(f"{key}={quote}{_sv_escape(value)}{quote}")
    return ",".join(items)


def _sv_program(name: str, command: list[str], env: Mapping[str, str]) -> list[str]:
    return [
        "",
        f"[program:{name}]",
        f"command={' '.join(_sv_escape(part) for part in command)}",
        f"directory={_sv_escape(str(ROOT))}",
        f"environment={_sv_env(env)}",
        "autostart=true",
        "autorestart=true",
        "startsecs=3",
        "startretries=3",
        "stopsignal=TERM",
        "stopwaitsecs=30",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_sv_escape(str(LOGS / f'{name}.log'))}",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=2",
    ]


def render_supervisor_conf(
    infra: Infra,
    prov: Provisioned,
    processes: Iterable[tuple[str, str]],
    overrides: Mapping[str, str] | None = None,
) -> str:
    python = sys.executable
    lines = [
        "; Generated by `python -m scripts.dev.stack up`; edits are overwritten.",
        "[unix_http_server]",
        f"file={_sv_escape(str(supervisor_socket()))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_sv_escape(str(LOGS / 'supervisord.log'))}",
        f"pidfile={_sv_escape(str(DEV / 'supervisord.pid'))}",
        f"directory={_sv_escape(str(ROOT))}",
        "logfile_maxbytes=5MB",
        "logfile_backups=1",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_sv_escape(str(supervisor_socket()))}",
    ]
    for svc, proc in sorted(processes):
        env = {"PYTHONUNBUFFERED": "1", **process_env(infra, prov, svc, proc, overrides or {})}
        command = [python, "-m", f"services.{svc}", proc]
        lines += _sv_program(program_name(svc, proc), command, env)
    for tool in DEV_TOOLS:
        env = {"PYTHONUNBUFFERED": "1", **dev_tool_env(tool, prov)}
        lines += _sv_program(tool.name, dev_tool_command(tool), env)
    return "\n".join(lines) + "\n"


def supervisor_rpc() -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{supervisor_socket()}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisord_running() -> bool:
    if not supervisor_socket().exists():
        return False
    try:
        state = supervisor_rpc().supervisor.getState()
    except (OSError, xmlrpc.client.Error):
        return False
    return bool(state.get("statename") == "RUNNING")


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def start_or_update_supervisord() -> None:
    if supervisord_running():
        result = subprocess.run(
            [_venv_bin("supervisorctl"), "-c", str(SUPERVISOR_CONF), "update"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        changes = result.stdout.strip()
        print(f"supervisord: running; update: {changes or 'no changes'}")
        if result.returncode != 0:
            raise StackError(f"supervisorctl update failed: {result.stderr.strip() or changes}")
        # A program that gave up (FATAL) or exited gets another go; running ones are untouched.
        rpc = supervisor_rpc()
        for info in rpc.supervisor.getAllProcessInfo():
            if info["statename"] in ("FATAL", "EXITED", "STOPPED"):
                print(f"supervisord: starting {info['name']} (was {info['statename']})")
                rpc.supervisor.startProcess(info["name"], False)
        return
    result = subprocess.run(
        [_venv_bin("supervisord"), "-c", str(SUPERVISOR_CONF)],
        cwd=ROOT,
        env={**_clean_environ(), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"supervisord did not start: {result.stderr.strip()}")
    deadline = time.monotonic() + 15
    while not supervisord_running():
        if time.monotonic() > deadline:
            raise StackError(f"supervisord did not answer; see {LOGS / 'supervisord.log'}")
        time.sleep(0.2)
    print("supervisord: started")


def supervisor_states() -> dict[str, str]:
    if not supervisord_running():
        return {}
    infos = supervisor_rpc().supervisor.getAllProcessInfo()
    return {str(i["name"]): str(i["statename"]) for i in infos}


def supervisor_pids() -> dict[str, int]:
    """The pid of every running program of the stack (0: not running)."""
    if not supervisord_running():
        return {}
    infos = supervisor_rpc().supervisor.getAllProcessInfo()
    return {str(i["name"]): int(i.get("pid") or 0) for i in infos}


def tree_rss_mib(pid: int, children: dict[int, list[int]]) -> float:
    """Resident memory (MiB) of a process and its descendants (e.g. a template pool's
    workers), from /proc."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
                    break
        except OSError:
            continue
        todo.extend(children.get(current, ()))
    return total


def process_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


# ----------------------------------------------------------------------------- readiness


def is_ready(port: int, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def program_ports(processes: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Every supervisord program of the stack and the port its /readyz answers on."""
    ports = {program_name(s, p): port_of(s, p) for s, p in processes}
    ports.update({tool.name: tool.port for tool in DEV_TOOLS})
    return ports


def wait_ready(processes: list[tuple[str, str]], timeout: float) -> list[str]:
    """Poll every program's /readyz; return the programs not ready (FATAL ones give up early)."""
    pending = program_ports(processes)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, port in list(pending.items()):
            if is_ready(port, timeout=1.0):
                del pending[name]
        if pending:
            states = supervisor_states()
            if all(states.get(n) == "FATAL" for n in pending):
                break
            time.sleep(0.5)
    return sorted(pending)


def tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return "(no log yet)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------ docker-compose

COMPOSE_HEADER = """\
# The PenguinMails stack for Docker users: the processes `make up` runs, in containers.
# Generated from the PROCESSES dicts of services/<name>/__main__.py by
#     uv run python -m scripts.dev.stack compose > docker-compose.yml
# and checked against them by tests/unit/test_compose.py.
#
# First run: put the dev-only secrets in .env (git ignores it), then start:
#     printf 'PM_VAULT_ROOT_TOKEN=%s\\nPM_POSTGRES_PASSWORD=%s\\nPM_RABBITMQ_PASSWORD=%s\\n' \\
#         "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" > .env
#     docker compose up --build -d
#     curl -s http://127.0.0.1:8000/healthz
#
# How it fits together (dev only):
# - `provision` (one-shot) creates the database, one role and schema per service, the Vault
#   policies and AppRoles, one RabbitMQ user per service (management API; write only its own
#   routing keys and exchange), runs every service's migrations, and writes each service's
#   AppRole credentials, database DSN and AMQP URL to /run/pm-creds/<service>.env on the
#   `pm-creds` volume.
# - Every service container sources its own file in its entrypoint, then execs the command
#   (this replaces the image's ENTRYPOINT; `init: true` keeps a reaping PID 1).
# - OpenBao is an in-memory dev server: it forgets everything when its container restarts;
#   `docker compose up -d --force-recreate` provisions it again.
# - Only the gateway (8000) and the RabbitMQ console (15672) are published, on 127.0.0.1.
#   `make up` uses port 8000 too: run one of the two stacks at a time.
"""


def render_compose(processes: Iterable[tuple[str, str]]) -> str:
    """docker-compose.yml for the given (service, process) pairs."""
    need = "see the header of docker-compose.yml"
    out = [
        COMPOSE_HEADER,
        "name: penguinmails",
        "",
        "x-platform-image: &platform-image",
        "  build: .",
        "  image: penguinmails-platform:dev",
        "",
        "x-service-env: &service-env",
        "  PM_ENVIRONMENT: dev",
        "  PM_HTTP_HOST: 0.0.0.0",
        # No credentials: each process's own RabbitMQ user comes with its creds file.
        "  PM_AMQP_URL: amqp://rabbitmq:5672/",
        "  PM_REDIS_URL: redis://redis:6379/0",
        "  PM_VAULT_ADDR: http://openbao:8200",
        *(f"  {name}: {ref}" for name, ref in TOKEN_KEY_ENV["*"].items()),
        "",
        "x-service-depends-on: &service-depends-on",
        "  provision: {condition: service_completed_successfully}",
        "  postgres: {condition: service_healthy}",
        "  redis: {condition: service_healthy}",
        "  rabbitmq: {condition: service_healthy}",
        "  openbao: {condition: service_healthy}",
        "",
        "x-creds-entrypoint: &creds-entrypoint",
        '  ["/bin/sh", "-c", "set -a && . \\"$$PM_CREDS_FILE\\" && set +a && exec \\"$$@\\"",'
        ' "pm-creds"]',
        "",
        "services:",
        "  postgres:",
        "    image: postgres:15",
        "    environment:",
        f"      POSTGRES_PASSWORD: ${{PM_POSTGRES_PASSWORD:?{need}}}",
        "    volumes: [pgdata:/var/lib/postgresql/data]",
        "    healthcheck:",
        '      test: ["CMD", "pg_isready", "-U", "postgres", "-h", "127.0.0.1"]',
        "      interval: 2s",
        "      timeout: 3s",
        "      retries: 30",
        "",
        "  redis:",
        "    image: redis:7",
        '    command: ["redis-server", "--save", "", "--appendonly", "no"]',
        "    healthcheck:",
        '      test: ["CMD", "redis-cli", "ping"]',
        "      interval: 2s",
        "      timeout: 3s",
        "      retries: 30",
        "",
        "  rabbitmq:",
        "    image: rabbitmq:3.13-management",
        "    environment:",
        "      RABBITMQ_DEFAULT_USER: pm",
        f"      RABBITMQ_DEFAULT_PASS: ${{PM_RABBITMQ_PASSWORD:?{need}}}",
        '    ports: ["127.0.0.1:15672:15672"]',
        "    volumes: [rabbitmq:/var/lib/rabbitmq]",
        "    healthcheck:",
        '      test: ["CMD", "rabbitmq-diagnostics", "-q", "check_port_connectivity"]',
        "      interval: 5s",
        "      timeout: 10s",
        "      retries: 30",
        "      start_period: 20s",
        "",
        "  openbao:",
        "    image: openbao/openbao:2.5.4",
        '    command: ["server", "-dev", "-dev-no-store-token"]',
        "    environment:",
        f"      BAO_DEV_ROOT_TOKEN_ID: ${{PM_VAULT_ROOT_TOKEN:?{need}}}",
        "      BAO_DEV_LISTEN_ADDRESS: 0.0.0.0:8200",
        "    cap_add: [IPC_LOCK]",
        "    healthcheck:",
        '      test: ["CMD", "bao", "status", "-address=http://127.0.0.1:8200"]',
        "      interval: 2s",
        "      timeout: 3s",
        "      retries: 30",
        "",
        "  provision:",
        "    <<: *platform-image",
        '    command: ["python", "-m", "scripts.dev.stack", "provision",'
        ' "--secrets-dir", "/run/pm-creds"]',
        '    user: "0:0"  # writes the pm-creds volume',
        "    environment:",
        "      <<: *service-env",
        "      PM_ADMIN_DATABASE_URL: postgresql://postgres:${PM_POSTGRES_PASSWORD}@postgres:5432/postgres",
        "      PM_VAULT_ROOT_TOKEN: ${PM_VAULT_ROOT_TOKEN}",
        # The broker's admin: creates one user per service (libs/common/amqp_users.py).
        "      PM_AMQP_URL: amqp://pm:${PM_RABBITMQ_PASSWORD}@rabbitmq:5672/",
        "      PM_RABBITMQ_MANAGEMENT_URL: http://pm:${PM_RABBITMQ_PASSWORD}@rabbitmq:15672",
        "    volumes: [pm-creds:/run/pm-creds]",
        "    depends_on:",
        "      postgres: {condition: service_healthy}",
        "      redis: {condition: service_healthy}",
        "      rabbitmq: {condition: service_healthy}",
        "      openbao: {condition: service_healthy}",
        '    restart: "no"',
    ]
    for svc, proc in sorted(processes, key=lambda sp: default_port(*sp)):
        port = default_port(svc, proc)
        probe = (
            f"import urllib.request; "
            f"urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=3)"
        )
        out += [
            "",
            f"  {program_name(svc, proc)}:",
            "    <<: *platform-image",
            f'    command: ["python", "-m", "services.{svc}", "{proc}"]',
            "    entrypoint: *creds-entrypoint",
            "    init: true",
            "    environment:",
            "      <<: *service-env",
            f'      PM_HTTP_PORT: "{port}"',
            f"      PM_CREDS_FILE: /run/pm-creds/{svc}.env",
            *(f"      {name}: {ref}" for name, ref in TOKEN_KEY_ENV.get(svc, {}).items()),
            '    volumes: ["pm-creds:/run/pm-creds:ro"]',
        ]
        if (svc, proc) == ("gateway", "api"):
            out.append(f'    ports: ["127.0.0.1:{port}:{port}"]')
        out += [
            "    depends_on: *service-depends-on",
            "    healthcheck:",
            f'      test: ["CMD", "python", "-c", "{probe}"]',
            "      interval: 5s",
            "      timeout: 5s",
            "      retries: 12",
            "      start_period: 30s",
            "    restart: unless-stopped",
        ]
    out += ["", "volumes:", "  pgdata:", "  rabbitmq:", "  pm-creds:", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------ commands


def cmd_up(_args: argparse.Namespace) -> int:
    started = time.monotonic()
    if OWNS_INFRA:
        infra_ensure()
    infra = Infra.from_env(token_file=DEV / "vault-root-token")
    overrides, refused = read_overrides()
    prov = provision(infra, DEV / "provision.json")
    write_fake_secrets(infra, prov)
    prov.save(DEV / "provision.json")
    pending = services_to_migrate(infra)
    for svc in SCHEMA_SERVICES:
        if svc not in pending:
            print(f"migrate: {svc}: up to date (every migration file is applied)")
    migrations = start_migrations(infra, prov, pending)  # they run while processes are listed
    processes, broken = discover_processes()
    for svc, err in broken.items():
        print(f"WARNING: services.{svc}.__main__ does not import, its processes are left out:")
        print(_indent(err))
    finish_migrations(migrations)
    LOGS.mkdir(parents=True, exist_ok=True)
    conf = render_supervisor_conf(infra, prov, processes, overrides)
    if not SUPERVISOR_CONF.is_file() or SUPERVISOR_CONF.read_text() != conf:
        _write_private(SUPERVISOR_CONF, conf)
    start_or_update_supervisord()

    programs = len(processes) + len(DEV_TOOLS)
    print(f"waiting for {programs} programs to answer /readyz ...")
    not_ready = wait_ready(processes, READY_TIMEOUT_SECONDS)
    if not_ready:
        states = supervisor_states()
        for name in not_ready:
            print(f"\nNOT READY: {name} ({states.get(name, '?')}); {LOGS}/{name}.log ends:")
            print(_indent(tail(LOGS / f"{name}.log")))
        print(f"\n{len(not_ready)} of {programs} programs not ready; `make down` stops all")
        return 1
    write_stack_env(infra, prov)
    print(up_summary(len(processes), time.monotonic() - started, overrides, refused))
    if broken:
        print(f"\nbut left out (do not import): {', '.join(sorted(broken))}")
        return 1
    return 0


def write_stack_env(infra: Infra, prov: Provisioned) -> None:
    _write_private(
        STACK_ENV,
        "".join(
            f"{k}={v}\n"
            for k, v in {
                "PM_GATEWAY_URL": GATEWAY_URL,
                "PM_FAKE_STRIPE_URL": FAKE_STRIPE.url,
                "PM_MAIL_CAPTURE_URL": MAIL_CAPTURE.url,
                # The inbox's inbound SMTP listener: deliver replies here (docs/inbox.md).
                "PM_INBOUND_SMTP_HOST": "127.0.0.1",
                "PM_INBOUND_SMTP_PORT": str(INBOUND_SMTP_PORT),
                "PM_FAKE_CLOUDFLARE_URL": FAKE_CLOUDFLARE.url,
                # For PUT /api/v1/domains/dns-credentials on this stack (docs/domains.md).
                "PM_FAKE_CLOUDFLARE_TOKEN": fake_credentials(prov)["cloudflare_token"],
                "VAULT_ADDR": infra.vault_addr,
                "VAULT_TOKEN": infra.vault_token,
                "PM_DATABASE_URL": service_dsn_admin(infra),
                "PM_AMQP_URL": prov.amqp_admin_url or infra.amqp_url,
                "PM_REDIS_URL": infra.redis_url,
            }.items()
        ),
    )


def up_summary(
    processes: int, took: float, overrides: Mapping[str, str], refused: Iterable[str]
) -> str:
    lines = [
        f"\nPenguinMails dev stack is up: {processes} processes and {len(DEV_TOOLS)} local fakes"
        f" ready ({took:.1f} s)",
        f"  gateway   {GATEWAY_URL}",
        f"  try       curl -s {GATEWAY_URL}/readyz",
        f"  sign up   curl -s -X POST {GATEWAY_URL}/api/v1/auth/signup"
        " -H 'Content-Type: application/json'"
        ' -d \'{"email": "you@example.com", "password": "a-long-passphrase",'
        ' "company": "Acme"}\'',
        "  next      docs/getting-started.md: log in, create an API key, first call, webhook",
        f"  stripe    {FAKE_STRIPE.url}  FAKE Stripe: Checkout pages with a Pay button,"
        " webhooks signed to /hooks/stripe",
        f"  mail      {MAIL_CAPTURE.url}  captured live-mode mail (SMTP 127.0.0.1:"
        f"{MAIL_SMTP_PORT}); `make mail` lists it",
        f"  domains   {FAKE_CLOUDFLARE.url}  FAKE Cloudflare + DNS on 127.0.0.1:{DNS_PORT}:"
        " publish a sending domain with the token PM_FAKE_CLOUDFLARE_TOKEN (.dev/stack.env),"
        " then verify it (docs/domains.md)",
        "  webhooks  http:// and loopback endpoint URLs are allowed (dev stack only)",
        f"  inbox     inbound SMTP 127.0.0.1:{INBOUND_SMTP_PORT} for replies to"
        f" reply+<token>@{DEV_REPLY_DOMAIN} (docs/inbox.md)",
        "  logs      tail -f .dev/logs/<service>-<process>.log  (e.g. .dev/logs/gateway-api.log)",
        "  env       set -a; . .dev/stack.env; set +a   (gateway URL, Vault, admin DSN)",
        "  status    make status",
        "  stop      make down",
    ]
    if overrides:
        where = OVERRIDES_FILE.relative_to(ROOT) if OVERRIDES_FILE.is_relative_to(ROOT) else ""
        lines.append(
            f"  settings  {', '.join(sorted(overrides))} (from {where or OVERRIDES_FILE}"
            " or the environment)"
        )
    for name in refused:
        lines.append(f"  ignored   {name}: the stack sets it per process")
    return "\n".join(lines)


def service_dsn_admin(infra: Infra) -> str:
    """The admin DSN, pointed at the platform database instead of the maintenance one."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(infra.admin_dsn)
    return urlunsplit(parts._replace(path=f"/{infra.database}"))


def cmd_down(_args: argparse.Namespace) -> int:
    if supervisord_running():
        rpc = supervisor_rpc()
        print("supervisord: stopping all programs")
        rpc.supervisor.stopAllProcesses(True)
        pid = int(rpc.supervisor.getPID())
        rpc.supervisor.shutdown()
        deadline = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        print("supervisord: stopped")
    else:
        print("supervisord: not running")
    return run_infra_sh("stop") if OWNS_INFRA else 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_status(_args: argparse.Namespace) -> int:
    if OWNS_INFRA:
        run_infra_sh("status")
    states = supervisor_states()
    if not states:
        print("\nservice processes: not running (`make up` starts them)")
        return 1
    pids = supervisor_pids()
    children = process_children()
    print(f"\n{'program':<22} {'state':<9} {'port':>5}  ready  {'RSS MiB':>7}")
    all_ready = True
    total_rss = 0.0
    tools = {tool.name: tool.port for tool in DEV_TOOLS}
    for name, state in sorted(states.items()):
        svc, _, proc = name.partition("-")
        port = port_of(svc, proc) if svc in SERVICE_NAMES else tools.get(name, 0)
        ready = bool(port) and is_ready(port)
        all_ready &= ready
        rss = tree_rss_mib(pids[name], children) if pids.get(name) else 0.0
        total_rss += rss
        print(f"{name:<22} {state:<9} {port:>5}  {'yes' if ready else 'NO':<5}  {rss:>7.0f}")
    print(f"{'total (service processes)':<45}  {total_rss:>7.0f}")
    return 0 if all_ready else 1


def cmd_migrate(_args: argparse.Namespace) -> int:
    if OWNS_INFRA:
        infra_ensure()
    infra = Infra.from_env(token_file=DEV / "vault-root-token")
    run_migrations(infra, provision(infra, DEV / "provision.json"))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    """Provision + migrate, then write `<svc>.env` (AppRole, DSN) per service to a directory.

    For docker-compose: every service container sources its own file before it starts.
    """
    out = Path(args.secrets_dir)
    infra = Infra.from_env(token_file=None)
    deadline = time.monotonic() + args.wait
    while True:  # compose's health checks say "up", not always "accepting our login"
        try:
            prov = provision(infra, out / "provision.json")
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            print(f"provision: not yet ({type(exc).__name__}: {exc}); retrying")
            time.sleep(2)
    run_migrations(infra, prov)
    for svc in SERVICE_NAMES:
        env = service_env(infra, prov, svc)
        body: dict[str, str] = {
            k: env[k]
            for k in ("PM_VAULT_ROLE_ID", "PM_VAULT_SECRET_ID", "PM_DATABASE_URL", "PM_REDIS_URL")
            if k in env
        }
        if svc in prov.amqp_urls:  # its own RabbitMQ user (PM_RABBITMQ_MANAGEMENT_URL)
            body["PM_AMQP_URL"] = prov.amqp_urls[svc]
        _write_private(out / f"{svc}.env", "".join(f"{k}='{v}'\n" for k, v in body.items()))
        os.chmod(out / f"{svc}.env", 0o644)  # read by the service containers' non-root user
    print(f"provision: credentials written to {out}/<service>.env")
    return 0


def cmd_compose(_args: argparse.Namespace) -> int:
    processes, broken = discover_processes()
    if broken:
        raise StackError(f"services that do not import: {', '.join(broken)}")
    sys.stdout.write(render_compose(processes))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.dev.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start or update the stack").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the stack").set_defaults(func=cmd_down)
    sub.add_parser("status", help="processes and readiness").set_defaults(func=cmd_status)
    sub.add_parser("migrate", help="provision and migrate").set_defaults(func=cmd_migrate)
    prov = sub.add_parser("provision", help="docker-compose's provisioning job")
    prov.add_argument("--secrets-dir", required=True)
    prov.add_argument("--wait", type=float, default=60.0, help="seconds to retry for")
    prov.set_defaults(func=cmd_provision)
    sub.add_parser("compose", help="print docker-compose.yml").set_defaults(func=cmd_compose)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
