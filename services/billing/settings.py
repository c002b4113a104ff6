"""Settings of the billing service (environment variables with the PM_ prefix).

Stripe credentials are never set in clear: in every deployment they are `vault:` references
resolved at start-up with billing's own Vault identity, e.g.
`PM_STRIPE_SECRET_KEY=vault:secret/penguinmails/api-keys/stripe#value` and
`PM_STRIPE_WEBHOOK_SECRET=vault:secret/penguinmails/webhooks/stripe#value`. The `test_*`
twins hold the Stripe test-mode key and test-mode endpoint secret used for `mode=test`
(pm_test_) principals and test-mode events.
"""

from typing import Literal

from pydantic import Field, SecretStr

from libs.common.settings import ServiceSettings

Mode = Literal["live", "test"]


class BillingSettings(ServiceSettings):
    service_name: str = "billing"
    database_url: str = "postgresql://pm_billing@127.0.0.1:5432/pm"

    # Stripe API: the real one in production; tests and `make up` point it at the fake.
    stripe_api_base: str = "https://api.stripe.com"
    stripe_secret_key: SecretStr | None = None
    stripe_test_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_test_webhook_secret: SecretStr | None = None
    stripe_timeout_seconds: float = 20.0
    # The stripe library retries connection errors, 409s and 5xx with idempotency keys.
    stripe_max_network_retries: int = 2
    # Stripe's own default: a signature older than this is refused (replay protection).
    stripe_webhook_tolerance_seconds: int = 300
    stripe_webhook_max_bytes: int = 1_048_576

    # The plan catalog: plan id -> Stripe price id (monthly), per mode.
    stripe_prices: dict[str, str] = Field(
        default_factory=lambda: {
            "starter": "price_starter",
            "pro": "price_pro",
            "enterprise": "price_enterprise",
        }
    )
    stripe_test_prices: dict[str, str] | None = None  # None: the same ids as live
    # The plan of a tenant without a live subscription in good standing.
    default_plan: str = "starter"

    # Where Checkout and the portal send the customer back (the dashboard).
    dashboard_url: str = "http://127.0.0.1:3000"
    checkout_success_path: str = "/dashboard/settings/billing?checkout=success"
    checkout_cancel_path: str = "/dashboard/settings/billing?checkout=canceled"
    portal_return_path: str = "/dashboard/settings/billing"

    # Reconciler: one run every interval; the first run looks this far back for events.
    reconcile_interval_seconds: float = 600.0
    reconcile_initial_lookback_seconds: int = 3 * 24 * 3600
    # Events are listed from this long before the cursor: `created` has one-second
    # granularity and Stripe may make an event visible a little after its `created`.
    reconcile_overlap_seconds: int = 300
    # A stored event still unprocessed after this long is processed by the reconciler.
    reconcile_stale_event_seconds: int = 600

    def secret_key(self, mode: Mode) -> str | None:
        key = self.stripe_secret_key if mode == "live" else self.stripe_test_secret_key
        return key.get_secret_value() if key else None

    def webhook_secrets(self) -> list[tuple[Mode, str]]:
        out: list[tuple[Mode, str]] = []
        if self.stripe_webhook_secret:
            out.append(("live", self.stripe_webhook_secret.get_secret_value()))
        if self.stripe_test_webhook_secret:
            out.append(("test", self.stripe_test_webhook_secret.get_secret_value()))
        return out

    def prices(self, mode: Mode) -> dict[str, str]:
        if mode == "test" and self.stripe_test_prices is not None:
            return self.stripe_test_prices
        return self.stripe_prices
