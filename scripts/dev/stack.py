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
database role and Vault AppRole. Its state lives in `.dev/` (gitignored): the Vault root
token, role passwords and AppRole secret ids (`provision.json`), `supervisord.conf`, logs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import secrets
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from libs.common.db import migrations_dirs
from libs.common.provision import (
    provision_database,
    provision_redis_users,
    provision_vault,
    service_dsn,
)
from libs.common.settings import SCHEMA_SERVICES, SERVICE_NAMES, default_port

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / ".dev"
LOGS = DEV / "logs"
INFRA_SH = ROOT / "scripts" / "dev" / "infra.sh"
SUPERVISOR_CONF = DEV / "supervisord.conf"
STACK_ENV = DEV / "stack.env"
READY_TIMEOUT_SECONDS = 90.0
REDIS_NAMESPACE = "pm"  # PM_REDIS_NAMESPACE's default: the ACL users' key patterns use it
GATEWAY_URL = f"http://127.0.0.1:{default_port('gateway', 'api')}"
# Token keys (libs/common/provision.py generates them): every process reads the public
# halves; only the minting service gets its private key (its Vault policy alone allows it).
TOKEN_KEY_ENV: dict[str, dict[str, str]] = {
    "*": {"PM_PRINCIPAL_PUBLIC_KEYS": "vault:secret/platform/principal#public_keys"},
    "gateway": {
        "PM_PRINCIPAL_PRIVATE_KEY": "vault:secret/gateway/principal#private_key",
        "PM_USER_TOKEN_PUBLIC_KEYS": "vault:secret/platform/user-token#public_keys",
        "PM_IDEMPOTENCY_ENCRYPTION_KEY": "vault:secret/gateway/idempotency#key",
    },
    "keys": {"PM_USER_TOKEN_PRIVATE_KEY": "vault:secret/keys/user-token#private_key"},
}
# Variables a developer's shell may carry that must not leak into service processes.
_FOREIGN_ENV_PREFIXES = ("PM_", "VAULT_", "BAO_")
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
        env = os.environ
        token = env.get("PM_VAULT_ROOT_TOKEN", "")
        if not token and token_file is not None and token_file.is_file():
            token = token_file.read_text().strip()
        if not token:
            raise StackError("no Vault root token: set PM_VAULT_ROOT_TOKEN or run infra.sh ensure")
        return cls(
            admin_dsn=env.get(
                "PM_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
            database=env.get("PM_DATABASE_NAME", "pm"),
            amqp_url=env.get("PM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            redis_url=env.get("PM_REDIS_URL", "redis://127.0.0.1:6379/0"),
            vault_addr=env.get("PM_VAULT_ADDR", "http://127.0.0.1:8200"),
            vault_token=token,
        )


@dataclass
class Provisioned:
    """What provisioning handed out; kept in a JSON file so a re-run changes nothing."""

    db_passwords: dict[str, str] = field(default_factory=dict)
    approles: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Per-service Redis ACL users (password, and the URL provisioning derived from it).
    redis_passwords: dict[str, str] = field(default_factory=dict)
    redis_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Provisioned:
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        return cls(
            db_passwords=dict(raw.get("db_passwords", {})),
            approles={k: (v[0], v[1]) for k, v in raw.get("approles", {}).items()},
            redis_passwords=dict(raw.get("redis_passwords", {})),
        )

    def save(self, path: Path) -> None:
        body = {
            "db_passwords": self.db_passwords,
            "approles": self.approles,
            "redis_passwords": self.redis_passwords,
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
        "PM_AMQP_URL": infra.amqp_url,
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
        env["PM_HTTP_PORT"] = str(default_port(service, process))
    return env


# ------------------------------------------------------------------------ provisioning


def provision(infra: Infra, state_file: Path) -> Provisioned:
    """Database, roles, schemas, Vault policies and AppRoles; credentials kept in state_file."""
    prov = Provisioned.load(state_file)
    for svc in SCHEMA_SERVICES:
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
            infra.redis_url, REDIS_NAMESPACE, prov.redis_passwords
        )
    except RedisError as exc:
        raise StackError(f"cannot create Redis ACL users at {infra.redis_url}: {exc}") from exc
    prov.save(state_file)
    print(
        f"provisioned: database {infra.database!r} ({len(SCHEMA_SERVICES)} roles/schemas), "
        f"Vault ({len(SERVICE_NAMES)} AppRoles)"
    )
    return prov


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
    items = []
    for key, value in sorted(env.items()):
        if '"' in value or "\n" in value or value.endswith("'") or value.startswith("'"):
            raise StackError(f"{key}: value cannot be written in supervisord.conf")
        items.append(f'{key}="{_sv_escape(value)}"')
    return ",".join(items)


def render_supervisor_conf(
    infra: Infra, prov: Provisioned, processes: Iterable[tuple[str, str]]
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
        name = program_name(svc, proc)
        env = {"PYTHONUNBUFFERED": "1", **service_env(infra, prov, svc, proc)}
        lines += [
            "",
            f"[program:{name}]",
            f"command={_sv_escape(python)} -m services.{svc} {proc}",
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


# ----------------------------------------------------------------------------- readiness


def is_ready(port: int, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(processes: list[tuple[str, str]], timeout: float) -> list[str]:
    """Poll every process's /readyz; return the programs not ready (FATAL ones give up early)."""
    pending = {program_name(s, p): default_port(s, p) for s, p in processes}
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
#   policies and AppRoles, runs every service's migrations, and writes each service's AppRole
#   credentials and database DSN to /run/pm-creds/<service>.env on the `pm-creds` volume.
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
        f"  PM_AMQP_URL: amqp://pm:${{PM_RABBITMQ_PASSWORD:?{need}}}@rabbitmq:5672/",
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
        "    volumes: [pm-creds:/run/pm-creds]",
        "    depends_on:",
        "      postgres: {condition: service_healthy}",
        "      redis: {condition: service_healthy}",
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
    infra_ensure()
    infra = Infra.from_env()
    prov = provision(infra, DEV / "provision.json")
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
    conf = render_supervisor_conf(infra, prov, processes)
    if not SUPERVISOR_CONF.is_file() or SUPERVISOR_CONF.read_text() != conf:
        _write_private(SUPERVISOR_CONF, conf)
    start_or_update_supervisord()

    print(f"waiting for {len(processes)} processes to answer /readyz ...")
    not_ready = wait_ready(processes, READY_TIMEOUT_SECONDS)
    if not_ready:
        states = supervisor_states()
        for name in not_ready:
            print(f"\nNOT READY: {name} ({states.get(name, '?')}); .dev/logs/{name}.log ends:")
            print(_indent(tail(LOGS / f"{name}.log")))
        print(f"\n{len(not_ready)} of {len(processes)} processes not ready; `make down` stops all")
        return 1
    _write_private(
        STACK_ENV,
        "".join(
            f"{k}={v}\n"
            for k, v in {
                "PM_GATEWAY_URL": GATEWAY_URL,
                "VAULT_ADDR": infra.vault_addr,
                "VAULT_TOKEN": infra.vault_token,
                "PM_DATABASE_URL": service_dsn_admin(infra),
                "PM_AMQP_URL": infra.amqp_url,
                "PM_REDIS_URL": infra.redis_url,
            }.items()
        ),
    )
    took = time.monotonic() - started
    print(
        f"\nPenguinMails dev stack is up: {len(processes)} processes ready ({took:.1f} s)\n"
        f"  gateway   {GATEWAY_URL}\n"
        f"  try       curl -s {GATEWAY_URL}/readyz\n"
        f"  sign up   curl -s -X POST {GATEWAY_URL}/api/v1/auth/signup"
        " -H 'Content-Type: application/json'"
        ' -d \'{"email": "you@example.com", "password": "a-long-passphrase",'
        ' "company": "Acme"}\'\n'
        f"  next      docs/getting-started.md: log in, create an API key, first call, webhook\n"
        f"  logs      tail -f .dev/logs/<service>-<process>.log  (e.g. .dev/logs/gateway-api.log)\n"
        f"  env       set -a; . .dev/stack.env; set +a   (gateway URL, Vault, admin DSN)\n"
        f"  status    make status\n"
        f"  stop      make down"
    )
    if broken:
        print(f"\nbut left out (do not import): {', '.join(sorted(broken))}")
        return 1
    return 0


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
    return run_infra_sh("stop")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_status(_args: argparse.Namespace) -> int:
    run_infra_sh("status")
    states = supervisor_states()
    if not states:
        print("\nservice processes: not running (`make up` starts them)")
        return 1
    print(f"\n{'program':<22} {'state':<9} {'port':>5}  ready")
    all_ready = True
    for name, state in sorted(states.items()):
        svc, _, proc = name.partition("-")
        port = default_port(svc, proc) if svc in SERVICE_NAMES else 0
        ready = bool(port) and is_ready(port)
        all_ready &= ready
        print(f"{name:<22} {state:<9} {port:>5}  {'yes' if ready else 'NO'}")
    return 0 if all_ready else 1


def cmd_migrate(_args: argparse.Namespace) -> int:
    infra_ensure()
    infra = Infra.from_env()
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
        body = {
            k: env[k]
            for k in ("PM_VAULT_ROLE_ID", "PM_VAULT_SECRET_ID", "PM_DATABASE_URL", "PM_REDIS_URL")
            if k in env
        }
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
