"""Settings of the keys service (environment variables with the PM_ prefix)."""

from pydantic import SecretStr

from libs.common.settings import ServiceSettings
from libs.common.signing_keys import DEV_USER_TOKEN_PRIVATE_KEY


class KeysSettings(ServiceSettings):
    service_name: str = "keys"
    database_url: str = "postgresql://pm_keys@127.0.0.1:5432/pm"

    # KV v2 mount holding the bcrypt hashes at api_keys/{tenant_id}/{key_id}.
    api_keys_mount: str = "api_keys"
    # bcrypt cost of API keys and passwords; 12 in production (tests may lower it).
    bcrypt_rounds: int = 12

    signup_enabled: bool = True
    # Signs dashboard access tokens (Ed25519, `<kid>:<base64url seed>`); the gateway verifies
    # them with the public half (PM_USER_TOKEN_PUBLIC_KEYS). Only this service holds it.
    user_token_private_key: SecretStr = SecretStr(DEV_USER_TOKEN_PRIVATE_KEY)
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    # Login and signup throttling (Redis, per window; addresses: IPv6 by /64). Only failed
    # logins count. Test stacks that sign up many tenants from one address raise these.
    login_window_seconds: int = 900
    # Failures of one address on one account before progressive delays start.
    login_max_failures_per_account: int = 5
    login_delay_base_seconds: float = 1.0
    login_delay_max_seconds: float = 300.0
    # Failed logins of one address, any accounts.
    login_max_failures_per_ip: int = 30
    # Signups of one address.
    signup_max_per_ip: int = 10

    # Prefix of every Redis key this service shares with the gateway (usage, sessions).
    redis_namespace: str = "pm"
    usage_flush_interval_seconds: float = 5.0
    usage_flush_batch: int = 500

    def principal_keys(self) -> str:
        return self.principal_public_keys
