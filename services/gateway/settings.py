"""Settings of the gateway service (environment variables with the PM_ prefix)."""

import hashlib
import hmac
from pathlib import Path

from pydantic import SecretStr

from libs.common.settings import ServiceSettings, default_port
from libs.common.signing_keys import DEV_PRINCIPAL_PRIVATE_KEY, DEV_USER_TOKEN_PUBLIC_KEYS


def _local(service: str) -> str:
    return f"http://127.0.0.1:{default_port(service, 'api')}"


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"

    # Base URLs of the services the gateway forwards to (default: the local port plan).
    keys_url: str = _local("keys")
    campaigns_url: str = _local("campaigns")
    delivery_url: str = _local("delivery")
    webhooks_url: str = _local("webhooks")
    billing_url: str = _local("billing")
    inbox_url: str = _local("inbox")
    upstream_timeout_seconds: float = 30.0
    upstream_connect_timeout_seconds: float = 2.0
    # Event streams (`text/event-stream`) have no total timeout; an upstream silent for this
    # long (no event, no heartbeat comment) is considered dead and the stream ends.
    upstream_stream_idle_seconds: float = 60.0
    upstream_max_connections: int = 200
    max_body_bytes: int = 5 * 1024 * 1024

    # Prefix of every Redis key the gateway writes (shared with the keys service: usage,
    # revoked sessions). One namespace per environment.
    redis_namespace: str = "pm"
    # After a Redis error, how long to use the local fallbacks before trying Redis again.
    redis_retry_seconds: float = 1.0

    # Verified-key caches: in-process LRU and Redis, both bounded in time.
    key_cache_local_ttl_seconds: float = 60.0
    key_cache_local_max_entries: int = 10_000
    key_cache_redis_ttl_seconds: int = 300
    # Failed verifications allowed per (lookup id, client address) and per client address
    # (IPv6: per /64) per window before that address's cache misses are refused.
    bad_secret_limit: int = 10
    bad_secret_limit_per_address: int = 50
    bad_secret_window_seconds: int = 300
    # A key that failed verification answers 401 from cache for this long.
    negative_cache_seconds: int = 30
    plan_cache_local_ttl_seconds: float = 60.0
    plan_cache_redis_ttl_seconds: int = 300

    # Prometheus scrapes /metrics here, never on the public port. 0: the api port + 1000
    # (8000 -> 9000 in the local port plan).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    idempotency_ttl_seconds: int = 24 * 3600
    # Encrypts stored idempotent responses (they may hold a new API key or webhook secret).
    # Vault: secret/gateway/idempotency#key (gateway policy only).
    idempotency_encryption_key: SecretStr = SecretStr("dev-only-idempotency-key-change-me-0123")

    # Signs the principal forwarded to services (Ed25519, `<kid>:<base64url seed>`); only the
    # gateway holds it. Services verify with PM_PRINCIPAL_PUBLIC_KEYS.
    principal_private_key: SecretStr = SecretStr(DEV_PRINCIPAL_PRIVATE_KEY)
    # Public key(s) of the dashboard access tokens the keys service signs.
    user_token_public_keys: str = DEV_USER_TOKEN_PUBLIC_KEYS
    # Proxies we run in front of the gateway (load balancer, ingress), each appending to
    # X-Forwarded-For: the client is the entry this many from the right. 0: the TCP peer.
    trusted_proxy_hops: int = 0
    # Deprecated switch, kept for existing configs: true means trusted_proxy_hops=1.
    trust_forwarded_for: bool = False
    # The built dashboard served at /dashboard/ (unset: web/dashboard/dist of this checkout).
    dashboard_dir: Path | None = None

    def proxy_hops(self) -> int:
        return self.trusted_proxy_hops or (1 if self.trust_forwarded_for else 0)

    def metrics_listen_port(self) -> int:
        return self.metrics_port or self.port_for("api") + 1000

    def key_cache_pepper(self) -> bytes:
        # Keys of the verified-key cache are HMAC(pepper, api key): a Redis dump reveals no key.
        base = self.principal_private_key.get_secret_value().encode()
        return hmac.new(base, b"pm-gateway-key-cache-v1", hashlib.sha256).digest()

    def upstream_url(self, service: str) -> str:
        url: str = getattr(self, f"{service}_url")
        return url.rstrip("/")
