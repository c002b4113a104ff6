"""Settings of the webhooks service (environment variables with the PM_ prefix)."""

from pydantic import Field

from libs.common.settings import ServiceSettings


class WebhooksSettings(ServiceSettings):
    service_name: str = "webhooks"
    database_url: str = "postgresql://pm_webhooks@127.0.0.1:5432/pm"

    # --- endpoint URLs and the SSRF guard ---------------------------------------------------
    # `http://` endpoint URLs are refused unless this is on (local development only).
    webhooks_allow_http: bool = False
    # Networks an endpoint may resolve to although they are not public, e.g.
    # ["127.0.0.0/8", "::1/128"] for local receivers. Empty in production.
    webhooks_allowed_networks: list[str] = Field(default_factory=list)

    # --- delivery engine -------------------------------------------------------------------
    # Delay before each retry (seconds); attempts = 1 + len(schedule). Seed: 1, 2, 4, 8, 16.
    webhooks_retry_schedule: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0])
    # Each retry waits between delay and delay * (1 + jitter), so retries never come early.
    webhooks_retry_jitter: float = 0.2
    # Longest Retry-After (seconds) honoured on 429/503; longer asks are capped.
    webhooks_max_retry_after: float = 3600.0
    webhooks_attempt_timeout_seconds: float = 30.0
    # A claimed delivery whose worker died is retried once its lease runs out.
    webhooks_lease_margin_seconds: float = 30.0
    # Attempts in flight per endpoint in one worker process (others wait in Postgres).
    webhooks_endpoint_concurrency: int = 10
    # Attempts in flight in one worker process, all endpoints together.
    webhooks_max_in_flight: int = 512
    webhooks_attempt_prefetch: int = 256
    # The sweeper re-dispatches deliveries whose broker wake-up was lost (crash between
    # commit and publish) once they are this overdue.
    webhooks_sweep_interval_seconds: float = 5.0
    webhooks_sweep_grace_seconds: float = 10.0
    # Response bodies are kept in the attempt log up to this many bytes.
    webhooks_response_body_limit: int = 2048

    # --- endpoint health -------------------------------------------------------------------
    # An endpoint failing without a single success for this long is disabled.
    webhooks_disable_after_hours: float = 120.0
    # ... or after this many failed attempts in a row (0: no count-based disabling).
    webhooks_disable_after_failures: int = 0

    # --- event stream (GET /api/v1/events/stream) ------------------------------------------
    # Events are kept this long for Last-Event-ID resumes (the promise is 24 h) ...
    events_stream_retention_hours: float = 25.0
    # ... and at most this many per tenant and mode (24 h at 20 events/s).
    events_stream_tenant_cap: int = 1_728_000
    events_stream_trim_interval_seconds: float = 60.0
    # A comment line this often keeps proxies from closing an idle stream.
    events_stream_heartbeat_seconds: float = 15.0
    # Events waiting for one reader; a reader this far behind is disconnected (it resumes).
    events_stream_queue_max: int = 1000
    # A stream ends after this long (the client reconnects with Last-Event-ID), so a revoked
    # key or a removed scope stops streaming within this time.
    events_stream_max_seconds: float = 900.0

    @property
    def webhooks_lease_seconds(self) -> float:
        return self.webhooks_attempt_timeout_seconds + self.webhooks_lease_margin_seconds
