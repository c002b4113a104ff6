"""The billing service's only door to Stripe: the official `stripe` library, asynchronous
(httpx), one `StripeClient` per mode (live / test key), against `PM_STRIPE_API_BASE`.

Returns plain dicts (Stripe's JSON) so domain code does not depend on library objects, and
turns library errors into three outcomes the callers act on: `StripeObjectMissing` (404
`resource_missing`), `StripeUnavailable` (connection, rate limit, 5xx: try again later) and
`StripeRejected` (Stripe refused the request: a bug or a configuration error). Webhook
signatures are verified here too, with the library's `Webhook.construct_event`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import stripe

from services.billing.settings import BillingSettings, Mode

__all__ = [
    "StripeApi",
    "StripeFailure",
    "StripeNotConfigured",
    "StripeObjectMissing",
    "StripeRejected",
    "StripeUnavailable",
    "verify_webhook",
]


class StripeFailure(Exception):
    """Base of every Stripe call failure."""


class StripeNotConfigured(StripeFailure):
    """No Stripe secret key is configured for this mode."""


class StripeUnavailable(StripeFailure):
    """Stripe could not be reached, rate-limited us, or failed (5xx): transient."""


class StripeRejected(StripeFailure):
    """Stripe refused the request (4xx other than a missing object)."""


class StripeObjectMissing(StripeFailure):
    """The object does not exist (in this mode)."""


def _translate(exc: stripe.StripeError) -> StripeFailure:
    kind = type(exc).__name__
    if isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing":
        return StripeObjectMissing(f"{kind}: {exc.code}")
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return StripeUnavailable(kind)
    status = exc.http_status or 0
    if isinstance(exc, stripe.APIError) or status >= 500:
        return StripeUnavailable(f"{kind} ({status})")
    # Only the class, status and code: Stripe's message may echo request parameters.
    return StripeRejected(f"{kind} ({status}, {exc.code})")


def verify_webhook(
    payload: bytes, signature: str | None, secrets: list[tuple[Mode, str]], tolerance: int
) -> tuple[Mode, dict[str, Any]] | None:
    """(mode, event) when `signature` is a valid, fresh Stripe signature of `payload` under
    one of the endpoint secrets (the live one, the test one); None otherwise. Raises
    ValueError when the signed payload is not a JSON object."""
    if not signature:
        return None
    for mode, secret in secrets:
        try:
            event = stripe.Webhook.construct_event(payload, signature, secret, tolerance)
        except stripe.SignatureVerificationError:
            continue
        return mode, event.to_dict()
    return None


class StripeApi:
    def __init__(self, settings: BillingSettings) -> None:
        self._settings = settings
        self._clients: dict[str, stripe.StripeClient] = {}
        self._http: list[stripe.HTTPXClient] = []
        modes: tuple[Mode, ...] = ("live", "test")
        for mode in modes:
            key = settings.secret_key(mode)
            if key:
                http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
                self._http.append(http)
                self._clients[mode] = stripe.StripeClient(
                    key,
                    base_addresses={"api": settings.stripe_api_base},
                    http_client=http,
                    max_network_retries=settings.stripe_max_network_retries,
                )

    def configured(self, mode: Mode) -> bool:
        return mode in self._clients

    def _client(self, mode: Mode) -> stripe.StripeClient:
        client = self._clients.get(mode)
        if client is None:
            raise StripeNotConfigured(f"no Stripe secret key for {mode} mode")
        return client

    async def close(self) -> None:
        for http in self._http:
            await http.close_async()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ writes

    async def create_customer(
        self, mode: Mode, tenant_id: str, *, idempotency_key: str
    ) -> dict[str, Any]:
        try:
            customer = await self._client(mode).v1.customers.create_async(
                {"metadata": {"tenant_id": tenant_id}, "description": f"Tenant {tenant_id}"},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return customer.to_dict()

    async def create_checkout_session(
        self,
        mode: Mode,
        *,
        customer: str,
        price: str,
        tenant_id: str,
        plan_id: str,
        success_url: str,
        cancel_url: str,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        metadata = {"tenant_id": tenant_id, "plan_id": plan_id}
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": customer,
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": tenant_id,
            "metadata": metadata,
            # The subscription (and its invoices) carry the tenant too.
            "subscription_data": {"metadata": metadata},
        }
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        try:
            session = await self._client(mode).v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                options,  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return session.to_dict()

    async def create_portal_session(
        self, mode: Mode, *, customer: str, return_url: str
    ) -> dict[str, Any]:
        try:
            session = await self._client(mode).v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return session.to_dict()

    # ------------------------------------------------------------------ reads

    async def checkout_session(self, mode: Mode, session_id: str) -> dict[str, Any]:
        try:
            obj = await self._client(mode).v1.checkout.sessions.retrieve_async(session_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return obj.to_dict()

    async def subscription(self, mode: Mode, subscription_id: str) -> dict[str, Any]:
        try:
            obj = await self._client(mode).v1.subscriptions.retrieve_async(subscription_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return obj.to_dict()

    async def invoice(self, mode: Mode, invoice_id: str) -> dict[str, Any]:
        try:
            obj = await self._client(mode).v1.invoices.retrieve_async(invoice_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return obj.to_dict()

    async def events_since(
        self, mode: Mode, created_gte: int, types: list[str]
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event created at or after `created_gte` of `types`, newest first."""
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": 100, "types": types}
        async for obj in self._pages(mode, "events", params):
            yield obj

    async def all_subscriptions(self, mode: Mode) -> AsyncIterator[dict[str, Any]]:
        """Every subscription of the account, canceled ones included, newest first."""
        async for obj in self._pages(mode, "subscriptions", {"status": "all", "limit": 100}):
            yield obj

    async def _pages(
        self, mode: Mode, resource: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        service = getattr(self._client(mode).v1, resource)
        while True:
            try:
                page = await service.list_async(params)
            except stripe.StripeError as exc:
                raise _translate(exc) from exc
            items = [item.to_dict() for item in page.data]
            for item in items:
                yield item
            if not page.has_more or not items:
                return
            params = {**params, "starting_after": items[-1]["id"]}
