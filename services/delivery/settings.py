"""Settings of the delivery service (environment variables with the PM_ prefix).

Secrets (the tracking key, ESP credentials) never come from the environment in clear: the
tracking key is a `vault:` reference in production, and ESP credentials are read from Vault
at send time (see `services.delivery.credentials`).
"""

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from libs.common.reply_tokens import DEV_REPLY_TOKEN_KEY
from libs.common.settings import ServiceSettings


class DeliverySettings(ServiceSettings):
    service_name: str = "delivery"
    database_url: str = "postgresql://pm_delivery@127.0.0.1:5432/pm"

    # Public base URL of the open pixel, click redirect and unsubscribe routes (the gateway).
    tracking_base_url: str = "http://127.0.0.1:8000"
    # HMAC key of tracking/unsubscribe tokens; `vault:secret/delivery/tracking#key` in prod.
    tracking_signing_key: SecretStr = SecretStr("dev-only-tracking-key-change-me-0123456789")
    # Tracking hits recorded per (link, client address) and per client address within
    # `tracking_rate_window_seconds`; more are answered but not recorded.
    tracking_rate_per_token: int = 20
    tracking_rate_per_address: int = 600
    tracking_rate_window_seconds: int = 60
    # Opens of one message within this window are one `email.opened` (0: every open counts).
    tracking_open_window_seconds: int = 3600

    # The per-message reply address `reply+<token>@<reply_domain>` (the inbox's MX) used as
    # Reply-To when a send sets none; None: no reply address (replies thread by headers).
    # The key is shared with the inbox: `vault:secret/platform/reply-token#key` in prod.
    reply_domain: str | None = None
    reply_token_key: SecretStr = SecretStr(DEV_REPLY_TOKEN_KEY)

    # Where ESP credentials live in Vault (KV v2 mount `vault_kv_mount`): platform-wide at
    # `<esp_credentials_path>/<provider>`, per tenant at
    # `<tenant_credentials_path>/<tenant>/<provider>`.
    esp_credentials_path: str = "penguinmails/api-keys"
    tenant_credentials_path: str = "delivery/tenants"
    credentials_cache_seconds: float = 60.0

    # None: the sandbox captures every send when environment == "dev" (make up), else never.
    force_sandbox: bool | None = None
    sandbox_dir: str = ".dev/sandbox-mail"

    # Provider API base URLs: the real providers; tests point them at tests/fakes/.
    postmark_base_url: str = "https://api.postmarkapp.com"
    mailgun_base_url: str = "https://api.mailgun.net"
    sendgrid_base_url: str = "https://api.sendgrid.com"
    ses_base_url: str | None = None  # None: https://email.<region>.amazonaws.com
    # SNS signing certificates are fetched only from URLs matching this pattern.
    sns_cert_url_pattern: str = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]+\.pem$"
    # SNS topics (ARNs) whose SES events are accepted; empty refuses every SNS message.
    sns_topic_arns: list[str] = Field(default_factory=list)
    provider_timeout_seconds: float = 20.0

    # Default routes when a tenant has no rule: category -> [primary, secondary].
    default_routes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "transactional": ["postmark", "mailgun"],
            "marketing": ["mailgun", "postmark"],
        }
    )
    # Provider limits shared by all workers through Redis: provider -> [rate/s, burst].
    provider_limits: dict[str, list[float]] = Field(
        default_factory=lambda: {
            "postmark": [500.0, 1000.0],
            "mailgun": [300.0, 500.0],
            "sendgrid": [600.0, 1000.0],
            "ses": [14.0, 28.0],
            "smtp": [20.0, 40.0],
        }
    )
    # Retry strategy per provider (seed 003): exponential or linear backoff, in seconds.
    retry_strategies: dict[str, str] = Field(
        default_factory=lambda: {"postmark": "exponential", "mailgun": "linear"}
    )
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    max_attempts: int = 8
    # A send that found Redis, Vault or Postgres down goes back to the queue for this long
    # (jittered), without counting an attempt: an outage of ours is not a provider failure.
    dependency_retry_seconds: float = 2.0

    # Circuit breaker: this many consecutive failures open a provider's circuit for
    # `circuit_open_seconds`; then one probe request decides whether it closes.
    circuit_failure_threshold: int = 5
    circuit_open_seconds: float = 30.0

    # A claimed message whose worker vanished is looked at again after this lease.
    send_lease_seconds: float = 120.0
    sweep_interval_seconds: float = 1.0
    # A fresh message is its work item's job; the sweeper takes it only this long overdue.
    sweep_grace_seconds: float = 60.0

    # One claim takes at most this many messages, fairly across tenants (a work item claims
    # again while its own messages wait): smaller claims let another tenant's message in
    # sooner, larger ones make fewer provider calls.
    claim_limit: int = 200
    # ... and at most this many while a single tenant has queued messages (nobody waits
    # behind it): fewer, larger claims and provider calls for a bulk send on a quiet system.
    claim_limit_alone: int = 1000
    # Claimed batches a worker process sends at once (work items beyond wait to claim): a
    # batch claimed but waiting behind others in one event loop would delay a small tenant's
    # message claimed with it; more slots only overlap provider round trips.
    send_concurrency: int = 2

    # Send lanes (docs/sending.md "Send lanes"): a send of at most `express_max_recipients`
    # recipients, sent now, from a tenant with fewer than `express_max_backlog` queued
    # messages goes to the express lane: the `express` process claims it as soon as its
    # accept commits (NOTIFY), so it never waits behind another tenant's bulk batch in a
    # worker. 0 recipients: every send goes to the bulk lane (the workers).
    express_max_recipients: int = 10
    express_max_backlog: int = 100
    # The bulk lane (workers) sends an express message that waited this long: the express
    # process is down or behind. The message's SendBatch is scheduled for then.
    express_takeover_seconds: float = 5.0
    # One express claim takes at most this many messages (fairly across tenants), and the
    # express process runs this many claims at once.
    express_claim_limit: int = 50
    express_concurrency: int = 2
    # The express process looks for due express messages this often without a NOTIFY
    # (provider retries, requeued claims, a lost LISTEN connection).
    express_poll_seconds: float = 1.0

    bulk_max_recipients: int = 10000

    # Daily send quota (plan table): a campaign step beyond today's quota is deferred to the
    # first UTC day with room within this many days, else dead-lettered (replayable).
    quota_defer_days: int = 7

    # Sending domains (services/delivery/domains). DKIM private keys live in Vault at
    # `<domain_keys_path>/<tenant>/<domain id>/<selector>` (field `private_key`).
    domain_keys_path: str = "delivery/domains"
    # Resolvers used for verification: `host` or `host:port`, comma-separated in
    # PM_DNS_RESOLVERS; empty means the system's (/etc/resolv.conf).
    dns_resolvers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dns_timeout_seconds: float = 5.0
    # What every domain publishes: SPF include, return-path and tracking CNAME targets,
    # and the DMARC report mailbox (at the customer's own domain).
    spf_include: str = "spf.penguinmails.com"
    return_path_host: str = "pm-bounces"
    return_path_target: str = "bounces.penguinmails.com"
    tracking_cname_host: str = "pm-track"
    tracking_cname_target: str = "track.penguinmails.com"
    dmarc_rua_mailbox: str = "dmarc-reports"
    # Re-verification: verified domains daily (spread ±10 %), pending ones every 15 minutes,
    # and a check DNS could not answer again after 5 minutes.
    domain_check_interval_seconds: float = 86400.0
    domain_pending_check_seconds: float = 900.0
    domain_retry_check_seconds: float = 300.0
    domain_checker_interval_seconds: float = 30.0
    # Cloudflare's API (None: https://api.cloudflare.com/client/v4); tests use a local fake.
    cloudflare_base_url: str | None = None
    dns_provider_timeout_seconds: float = 20.0

    @field_validator("dns_resolvers", mode="before")
    @classmethod
    def _split_resolvers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
