"""Process settings: environment variables with the `PM_` prefix, `vault:` values resolved.

Any string setting may be written `vault:<mount>/<path>#<field>` (field defaults to `value`),
e.g. `PM_DATABASE_URL=vault:secret/keys/database#url`. Such values are read from Vault once,
at start-up, with the process's own Vault identity (token or AppRole). A reference that does
not resolve stops start-up with an error naming the path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.db import PoolBudget, pool_budget
from libs.common.signing_keys import DEV_PRINCIPAL_PUBLIC_KEYS, is_builtin_key
from libs.common.vault import VaultError, VaultRef, make_client, read_secret_sync

SERVICE_NAMES = ("gateway", "keys", "campaigns", "delivery", "webhooks", "billing", "inbox")
SCHEMA_SERVICES = ("keys", "campaigns", "delivery", "webhooks", "billing", "inbox")

# Port plan for local runs: process kind base + service index (gateway 0 ... inbox 6).
# 8200-8201 stay free for Vault/OpenBao (API and cluster listener).
_PROCESS_PORT_BASE = {
    "api": 8000,
    "relay": 8100,
    "runner": 8300,
    "reconciler": 8400,
    "worker": 8600,
}


def default_port(service: str, process: str) -> int:
    base = _PROCESS_PORT_BASE.get(process, 8500)
    return base + SERVICE_NAMES.index(service)


# Processes that work through a backlog (consumers, webhooks' stream consumer among them,
# relays, the campaign runner, billing's reconciler) run at a lower CPU priority than those
# answering callers, so that on a shared host a drain of 100,000 events does not multiply the
# API's latency (bench/drain.py).
BACKGROUND_KINDS = frozenset({"worker", "relay", "runner", "reconciler", "stream"})
BACKGROUND_NICE = 10

# Seconds between a robust AMQP connection's attempts to come back after the broker went away
# (aio-pika's default is 5 s). Every connection of ours uses it, so consumers and relays are
# consuming again within about a second of the broker's return (issue 16's 10 s target); a
# refused TCP connect per second per process is nothing for a broker that is down.
AMQP_RECONNECT_SECONDS = 1.0


class SettingsError(RuntimeError):
    """Settings could not be loaded (a `vault:` reference did not resolve, ...)."""


class ServiceSettings(BaseSettings):
    """Settings every process has. Services subclass it and set `service_name`."""

    model_config = SettingsConfigDict(env_prefix="PM_", extra="ignore", populate_by_name=True)

    service_name: str = "platform"
    environment: Literal["dev", "test", "production"] = "dev"
    log_level: str = "INFO"

    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0 = the port plan's default for this service/process

    # Each service with a schema sets its own role's DSN as default; the gateway has none.
    database_url: str | None = None
    # A session connection straight to Postgres for what a transaction-mode pooler
    # (PgBouncer) cannot carry: the relay's LISTEN and the migrations' advisory lock.
    # None: database_url (no pooler in between, as in `make up` and tests).
    database_direct_url: str | None = None
    # The process kind (api, worker, relay, ...), set by the runner: selects the row of
    # libs.common.db.POOL_BUDGET. PM_DB_POOL_MIN / PM_DB_POOL_MAX override that row.
    process_kind: str = "command"
    # Niceness this process adds to itself at start (os.nice; docs/scheduling.md "CPU
    # priority"): None = its kind's default, BACKGROUND_NICE for the kinds that work through a
    # backlog (worker, relay, runner, reconciler), 0 for those that answer callers (api,
    # express, smtp). 0 turns it off.
    process_nice: int | None = Field(default=None, ge=0, le=19)
    db_pool_min: int | None = None
    db_pool_max: int | None = None
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"

    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_kv_mount: str = "secret"

    # Public key(s) verifying the principal the gateway forwards to services
    # (`<kid>:<base64url>`, comma-separated during a rotation; libs/common/signing_keys.py).
    # Only the gateway holds the private half (GatewaySettings.principal_private_key).
    principal_public_keys: str = DEV_PRINCIPAL_PUBLIC_KEYS
    principal_ttl_seconds: int = 60
    # Seals list cursors (libs/common/pagination.py, AES-GCM under a key derived from it).
    # Every replica of a service must share it; outside dev/test the built-in one is refused
    # (k8s: `vault:secret/platform/cursor#key`, see docs/operations.md).
    cursor_key: SecretStr = SecretStr("dev-only-cursor-key-0123456789abcdef0123456789")

    otel_exporter_otlp_endpoint: str | None = None
    events_exchange: str = "pm.events"
    # Bounded retry of event handlers: delay (ms) before each retry; len() = max retries.
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1000, 5000, 30000, 120000])
    consumer_prefetch: int = 32

    @model_validator(mode="before")
    @classmethod
    def _resolve_vault_refs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        refs = {k: v for k, v in data.items() if isinstance(v, str) and v.startswith("vault:")}
        if not refs:
            return data
        addr = str(data.get("vault_addr") or cls.model_fields["vault_addr"].default)
        client = make_client(
            addr,
            token=_plain(data.get("vault_token")),
            role_id=_plain(data.get("vault_role_id")),
            secret_id=_plain(data.get("vault_secret_id")),
        )
        resolved = dict(data)
        for key, raw in refs.items():
            try:
                ref = VaultRef.parse(raw)
                resolved[key] = read_secret_sync(client, ref)
            except (ValueError, VaultError) as exc:
                raise SettingsError(f"setting PM_{key.upper()}: {exc}") from exc
        return resolved

    @model_validator(mode="after")
    def _refuse_builtin_keys(self) -> ServiceSettings:
        # The built-in keys are in the source code: anyone could sign with them.
        if self.environment in ("dev", "test"):
            return self
        for name in type(self).model_fields:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not isinstance(text, str):
                continue
            key_like = name.endswith(("_key", "_keys"))
            if text.startswith("dev-only-") or (key_like and is_builtin_key(text)):
                raise SettingsError(
                    f"PM_{name.upper()} is a built-in development key; outside "
                    "PM_ENVIRONMENT=dev/test set a generated one (docs/operations.md)"
                )
        return self

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(f"PM_DATABASE_URL is not set for {self.service_name}")
        return self.database_url

    def direct_database_url(self) -> str:
        """The session (non-pooled) DSN: LISTEN/NOTIFY and migrations."""
        return self.database_direct_url or self.require_database_url()

    def pool_budget(self) -> PoolBudget:
        row = pool_budget(self.process_kind)
        return PoolBudget(
            self.db_pool_min if self.db_pool_min is not None else row.min_size,
            self.db_pool_max if self.db_pool_max is not None else row.max_size,
        )

    def nice_for(self, process: str) -> int:
        if self.process_nice is not None:
            return self.process_nice
        return BACKGROUND_NICE if process in BACKGROUND_KINDS else 0

    def port_for(self, process: str) -> int:
        return self.http_port or default_port(self.service_name, process)

    def vault_client_kwargs(self) -> dict[str, Any]:
        return {
            "addr": self.vault_addr,
            "token": self.vault_token.get_secret_value() if self.vault_token else None,
            "role_id": self.vault_role_id,
            "secret_id": self.vault_secret_id.get_secret_value() if self.vault_secret_id else None,
        }


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)
