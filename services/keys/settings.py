"""Settings of the keys service (environment variables with the PM_ prefix)."""

import hashlib
import hmac

from pydantic import SecretStr

from libs.common.settings import ServiceSettings


class KeysSettings(ServiceSettings):
    service_name: str = "keys"
    database_url: str = "postgresql://pm_keys@127.0.0.1:5432/pm"

    # KV v2 mount holding the bcrypt hashes at api_keys/{tenant_id}/{key_id}.
    api_keys_mount: str = "api_keys"
    # bcrypt cost of API keys and passwords; 12 in production (tests may lower it).
    bcrypt_rounds: int = 12

    signup_enabled: bool = True
    # Signs dashboard access tokens; the gateway verifies them with the same key. Unset: a
    # key derived from the principal signing key (see user_jwt_key), so both sides agree.
    auth_jwt_signing_key: SecretStr | None = None
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    # Login throttling (Redis fixed windows).
    login_window_seconds: int = 900
    login_max_failures_per_account: int = 5
    login_max_attempts_per_ip: int = 30

    # Prefix of every Redis key this service shares with the gateway (usage, sessions).
    redis_namespace: str = "pm"
    usage_flush_interval_seconds: float = 5.0
    usage_flush_batch: int = 500

    def user_jwt_key(self) -> bytes:
        if self.auth_jwt_signing_key is not None:
            return self.auth_jwt_signing_key.get_secret_value().encode()
        # Same derivation in services/gateway/settings.py: a distinct key per purpose.
        base = self.principal_signing_key.get_secret_value().encode()
        return hmac.new(base, b"pm-user-access-token-v1", hashlib.sha256).digest()

    def principal_key(self) -> str:
        return self.principal_signing_key.get_secret_value()
