"""Settings of the gateway service (environment variables with the PM_ prefix)."""

import hashlib
import hmac

from pydantic import SecretStr

from libs.common.settings import ServiceSettings, default_port


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
    # Failed verifications allowed per lookup id per window before cache misses are refused.
    bad_secret_limit: int = 10
    bad_secret_window_seconds: int = 300
    # A key that failed verification answers 401 from cache for this long.
    negative_cache_seconds: int = 30
    plan_cache_local_ttl_seconds: float = 60.0
    plan_cache_redis_ttl_seconds: int = 300

    idempotency_ttl_seconds: int = 24 * 3600

    # Dashboard access tokens (issued by the keys service). Unset: derived from the principal
    # signing key exactly as services/keys/settings.py does, so both sides agree.
    auth_jwt_signing_key: SecretStr | None = None
    # Take the client address from X-Forwarded-For (only behind a trusted load balancer).
    trust_forwarded_for: bool = False

    def user_jwt_key(self) -> bytes:
        if self.auth_jwt_signing_key is not None:
            return self.auth_jwt_signing_key.get_secret_value().encode()
        base = self.principal_signing_key.get_secret_value().encode()
        return hmac.new(base, b"pm-user-access-token-v1", hashlib.sha256).digest()

    def key_cache_pepper(self) -> bytes:
        # Keys of the verified-key cache are HMAC(pepper, api key): a Redis dump reveals no key.
        base = self.principal_signing_key.get_secret_value().encode()
        return hmac.new(base, b"pm-gateway-key-cache-v1", hashlib.sha256).digest()

    def upstream_url(self, service: str) -> str:
        url: str = getattr(self, f"{service}_url")
        return url.rstrip("/")
