"""Settings of the inbox service (environment variables with the PM_ prefix).

Inbound webhook secrets are never set in clear: they are read from Vault at
`<inbound_credentials_path>/<provider>` (KV v2, mount `vault_kv_mount`): postmark
`{webhook_username, webhook_password}`, mailgun `{webhook_signing_key}`, sendgrid
`{webhook_username, webhook_password}` (the basic auth of the Inbound Parse URL), ses
`{sns_topic_arn}` (optional, added to `sns_topic_arns`). The reply-token key is a `vault:`
reference in production (`vault:secret/platform/reply-token#key`), shared with delivery.
"""

from pydantic import Field, SecretStr

from libs.common.reply_tokens import DEV_REPLY_TOKEN_KEY
from libs.common.settings import ServiceSettings


class InboxSettings(ServiceSettings):
    service_name: str = "inbox"
    database_url: str = "postgresql://pm_inbox@127.0.0.1:5432/pm"

    # Where each provider's inbound webhook secrets live in Vault.
    inbound_credentials_path: str = "penguinmails/inbound"
    credentials_cache_seconds: float = 60.0
    # SNS: certificates only from this URL pattern, messages only from these topics.
    sns_cert_url_pattern: str = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]+\.pem$"
    sns_topic_arns: list[str] = Field(default_factory=list)
    provider_timeout_seconds: float = 20.0

    # HMAC key of the per-message reply address `reply+<token>@<reply domain>` (delivery
    # signs with the same key). Domains whose mail the platform accepts (SMTP RCPT TO).
    reply_token_key: SecretStr = SecretStr(DEV_REPLY_TOKEN_KEY)
    reply_domains: list[str] = Field(default_factory=lambda: ["reply.penguinmails.local"])

    # Largest inbound message (raw MIME bytes) accepted by any route; SMTP answers 552.
    inbound_max_bytes: int = 25 * 1024 * 1024
    # Raw MIME is kept this long for reprocessing, then swept by the worker.
    raw_retention_days: int = 30
    raw_sweep_interval_seconds: float = 3600.0

    # The inbound SMTP listener (`python -m services.inbox smtp`, self-hosted MX).
    inbound_smtp_host: str = "127.0.0.1"
    inbound_smtp_port: int = 8726
    # PEM certificate and key: STARTTLS is offered when both are set.
    inbound_smtp_tls_cert: str | None = None
    inbound_smtp_tls_key: str | None = None
