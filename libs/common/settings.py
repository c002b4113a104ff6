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

from libs.common.vault import VaultError, VaultRef, make_client, read_secret_sync

SERVICE_NAMES = ("gateway", "keys", "campaigns", "delivery", "webhooks", "billing")
SCHEMA_SERVICES = ("keys", "campaigns", "delivery", "webhooks", "billing")

# Port plan for local runs: process kind base + service index (gateway 0 ... billing 5).
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
    db_pool_min: int = 1
    db_pool_max: int = 10
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"

    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_kv_mount: str = "secret"

    # Key that signs/verifies the principal the gateway forwards to services.
    principal_signing_key: SecretStr = SecretStr("dev-only-principal-key-change-me-0123456789")
    principal_ttl_seconds: int = 60
    # Seals list cursors (libs/common/pagination.py); unset: derived from the principal key,
    # which every replica of every service already shares.
    cursor_key: SecretStr | None = None

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

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(f"PM_DATABASE_URL is not set for {self.service_name}")
        return self.database_url

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
