"""Fake Stripe API: the subset of Stripe's REST API the billing service calls, spoken the way
the real `stripe` Python library expects it, plus webhook delivery signed like Stripe's.

API (form-encoded requests with bracket notation, Bearer `sk_live_`/`sk_test_` auth, Stripe
object shapes and id prefixes, `{"object": "list", "data", "has_more"}` lists with
`starting_after`, `{"error": {"type", "code", "message", "param"}}` errors, Idempotency-Key
replay): customers, prices, checkout sessions, billing portal sessions, subscriptions,
invoices and events (`GET /v1/events` with `created[gt|gte|lt|lte]`, `type`, `types[]`).
Live and test data are kept apart like Stripe keeps them: a key sees only its own mode.

Webhooks: every event is sent to the registered endpoints of its mode with
`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{payload}" keyed by the whsec_
secret>`; a non-2xx answer or a refused connection is retried with backoff, as Stripe does.
Tests can lose the next deliveries (`drop_next`), hold deliveries and release them in any
order (`hold` / `release`), or deliver events twice (`duplicate_next`).

What Stripe's dashboard or the customer does, tests (and `make up`, through the HTML pay
page and `/_fake/...` routes) do here: complete a checkout, change or cancel a
subscription, pay or fail an invoice. Run alone: `python -m tests.fakes.stripe --port N`;
`make up` runs it that way (keys and webhook secrets from FAKE_STRIPE_* variables), so a
Checkout Session's `url` is a page whose Pay button completes it. Every page says it is a fake.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import itertools
import json
import os
import queue
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

API_VERSION = "2026-10-28.endive"
DEFAULT_KEYS = {"live": "sk_live_fake_0123456789abcdef", "test": "sk_test_fake_0123456789abcdef"}
DEFAULT_PRICES = {"price_starter": 2900, "price_pro": 9900, "price_enterprise": 29900}
PERIOD_SECONDS = 30 * 24 * 3600
_COUNTER = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends for `payload` (bytes exactly as sent)."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload.decode() if isinstance(payload, bytes) else payload
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation (`a[b][0][c]=v`) to nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                idx = len(node) if part == "[]" else int(part)
                while len(node) <= idx:
                    node.append(None)
                if last:
                    node[idx] = value
                else:
                    nxt = parts[i + 1]
                    if node[idx] is None:
                        node[idx] = [] if nxt.isdigit() or nxt == "[]" else {}
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    nxt = parts[i + 1]
                    if part not in node:
                        node[part] = [] if nxt.isdigit() or nxt == "[]" else {}
                    node = node[part]
    return root


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.code, self.param = (
            status,
            type_,
            message,
            code,
            param,
        )

    def response(self) -> JSONResponse:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
        if self.param:
            err["param"] = self.param
        err["request_log_url"] = "https://dashboard.stripe.com/test/logs/req_fake"
        headers = {"Request-Id": f"req_{secrets.token_hex(7)}"}
        if self.status >= 500:
            headers["Stripe-Should-Retry"] = "true"
        return JSONResponse({"error": err}, status_code=self.status, headers=headers)


def missing(kind: str, obj_id: str, param: str = "id") -> StripeError:
    return StripeError(
        404, "invalid_request_error", f"No such {kind}: '{obj_id}'", "resource_missing", param
    )


@dataclass
class Endpoint:
    url: str
    secret: str
    mode: str


@dataclass
class Delivery:
    """One webhook event delivery to one endpoint, attempted until a 2xx."""

    event_id: str
    endpoint: Endpoint
    payload: bytes
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    delivered: bool = False


@dataclass
class ModeData:
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    portal_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    idempotency: dict[str, tuple[str, int, Any]] = field(default_factory=dict)


class FakeStripe:
    def __init__(
        self,
        keys: dict[str, str] | None = None,
        prices: dict[str, int] | None = None,
        retry_delays: list[float] | None = None,
    ) -> None:
        self.keys = dict(keys or DEFAULT_KEYS)
        self.modes = {mode: ModeData() for mode in ("live", "test")}
        for mode in self.modes:
            for price_id, amount in (prices or DEFAULT_PRICES).items():
                self._add_price(mode, price_id, amount)
        self.endpoints: list[Endpoint] = []
        # Stripe retries for up to three days; tests want the same shape, faster.
        self.retry_delays = list(retry_delays or [0.2, 0.5, 1, 2, 3, 5, 5, 5, 5, 10, 10, 10])
        self.requests: list[tuple[str, str, str]] = []  # (method, path, mode)
        self.deliveries: list[Delivery] = []
        self._lock = threading.RLock()
        self._script: list[int] = []
        self._drop: list[str | None] = []
        self._duplicate = 0
        self._holding = False
        self._held: list[Delivery] = []
        self._queue: queue.PriorityQueue[tuple[float, int, Delivery | None]] = queue.PriorityQueue()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ test controls

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_endpoint(self, url: str, secret: str, mode: str = "live") -> None:
        with self._lock:
            self.endpoints.append(Endpoint(url, secret, mode))

    def remove_endpoint(self, url: str) -> None:
        """Stop delivering to `url` (its pending retries are dropped too)."""
        with self._lock:
            self.endpoints[:] = [e for e in self.endpoints if e.url != url]

    def fail_next(self, *statuses: int) -> None:
        """Answer the next API requests with these statuses (500, 429, ...)."""
        with self._lock:
            self._script.extend(statuses)

    def drop_next(self, n: int = 1, event_type: str | None = None) -> None:
        """Never deliver the next `n` events (of `event_type`, if given): lost webhooks."""
        with self._lock:
            self._drop.extend([event_type] * n)

    def duplicate_next(self, n: int = 1) -> None:
        """Deliver each of the next `n` events twice."""
        with self._lock:
            self._duplicate += n

    def hold(self) -> None:
        """Keep deliveries back until `release`."""
        with self._lock:
            self._holding = True

    def release(self, order: str = "fifo") -> None:
        """Send held deliveries, oldest first (`fifo`) or newest first (`reverse`)."""
        with self._lock:
            held = self._held if order == "fifo" else list(reversed(self._held))
            self._held, self._holding = [], False
        for n, d in enumerate(held):
            # Spaced so the receiver sees them in this order.
            self._queue.put((time.monotonic() + n * 0.05, next(_COUNTER), d))

    def deliveries_of(self, event_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.event_id == event_id]

    def pending_deliveries(self) -> int:
        with self._lock:
            return sum(1 for d in self.deliveries if not d.delivered)

    def events(self, mode: str = "live", type_: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.modes[mode].events if type_ is None or e["type"] == type_]

    def subscription(self, sub_id: str, mode: str = "live") -> dict[str, Any]:
        with self._lock:
            return cast(
                "dict[str, Any]", json.loads(json.dumps(self.modes[mode].subscriptions[sub_id]))
            )

    def complete_checkout(self, session_id: str, mode: str = "live") -> dict[str, Any]:
        """The customer pays: subscription + paid invoice, events like Stripe's."""
        with self._lock:
            data = self.modes[mode]
            session = data.sessions.get(session_id)
            if session is None:
                raise missing("checkout.session", session_id)
            if session["status"] != "open":
                return session
            customer = session["customer"] or self._create_customer(mode, {})["id"]
            line = session["_line_items"][0]
            price = data.prices[line["price"]]
            sub = self._create_subscription(
                mode, customer, price, dict(session["_subscription_metadata"])
            )
            invoice = self._create_invoice(mode, sub, "subscription_create", paid=True)
            session.update(
                status="complete",
                payment_status="paid",
                customer=customer,
                subscription=sub["id"],
                invoice=invoice["id"],
            )
            self._emit(mode, "customer.subscription.created", sub)
            self._emit(mode, "checkout.session.completed", session)
            self._emit(mode, "invoice.paid", invoice)
            return session

    def update_subscription(
        self,
        sub_id: str,
        *,
        price: str | None = None,
        status: str | None = None,
        cancel_at_period_end: bool | None = None,
        mode: str = "live",
    ) -> dict[str, Any]:
        """A change made in the portal or the dashboard: `customer.subscription.updated`."""
        with self._lock:
            sub = self._sub(mode, sub_id)
            previous: dict[str, Any] = {}
            if price is not None:
                previous["items"] = json.loads(json.dumps(sub["items"]))
                sub["items"]["data"][0]["price"] = self.modes[mode].prices[price]
                sub["items"]["data"][0]["plan"] = _plan_of(self.modes[mode].prices[price])
                sub["plan"] = sub["items"]["data"][0]["plan"]
            if status is not None:
                previous["status"] = sub["status"]
                sub["status"] = status
            if cancel_at_period_end is not None:
                previous["cancel_at_period_end"] = sub["cancel_at_period_end"]
                sub["cancel_at_period_end"] = cancel_at_period_end
                sub["cancel_at"] = (
                    sub["items"]["data"][0]["current_period_end"]
                    if (cancel_at_period_end)
                    else None
                )
            self._emit(mode, "customer.subscription.updated", sub, previous)
            return cast("dict[str, Any]", json.loads(json.dumps(sub)))

    def cancel_subscription(self, sub_id: str, mode: str = "live") -> dict[str, Any]:
        with self._lock:
            sub = self._sub(mode, sub_id)
            now = int(time.time())
            sub.update(status="canceled", canceled_at=now, ended_at=now)
            self._emit(mode, "customer.subscription.deleted", sub)
            return cast("dict[str, Any]", json.loads(json.dumps(sub)))

    def renew(self, sub_id: str, *, paid: bool, mode: str = "live") -> dict[str, Any]:
        """The next billing period: a paid invoice, or a failed payment (past_due)."""
        with self._lock:
            sub = self._sub(mode, sub_id)
            item = sub["items"]["data"][0]
            item["current_period_start"] = item["current_period_end"]
            item["current_period_end"] += PERIOD_SECONDS
            invoice = self._create_invoice(mode, sub, "subscription_cycle", paid=paid)
            if paid:
                self._emit(mode, "invoice.paid", invoice)
            else:
                previous = {"status": sub["status"]}
                sub["status"] = "past_due"
                self._emit(mode, "invoice.payment_failed", invoice)
                self._emit(mode, "customer.subscription.updated", sub, previous)
            return cast("dict[str, Any]", json.loads(json.dumps(invoice)))

    # ------------------------------------------------------------------ object factories

    def _add_price(self, mode: str, price_id: str, amount: int) -> None:
        self.modes[mode].prices[price_id] = {
            "id": price_id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": "usd",
            "livemode": mode == "live",
            "lookup_key": price_id.removeprefix("price_"),
            "metadata": {},
            "nickname": None,
            "product": f"prod_{price_id.removeprefix('price_')}",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "type": "recurring",
            "unit_amount": amount,
        }

    def _create_customer(self, mode: str, params: dict[str, Any]) -> dict[str, Any]:
        cus = {
            "id": new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": params.get("email"),
            "name": params.get("name"),
            "description": params.get("description"),
            "livemode": mode == "live",
            "metadata": dict(params.get("metadata") or {}),
            "currency": None,
            "delinquent": False,
        }
        self.modes[mode].customers[str(cus["id"])] = cus
        return cus

    def _create_subscription(
        self, mode: str, customer: str, price: dict[str, Any], metadata: dict[str, Any]
    ) -> dict[str, Any]:
        now = int(time.time())
        sub_id = new_id("sub")
        item = {
            "id": new_id("si"),
            "object": "subscription_item",
            "created": now,
            "current_period_start": now,
            "current_period_end": now + PERIOD_SECONDS,
            "metadata": {},
            "price": price,
            "plan": _plan_of(price),
            "quantity": 1,
            "subscription": sub_id,
        }
        sub = {
            "id": sub_id,
            "object": "subscription",
            "billing_cycle_anchor": now,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": "usd",
            "customer": customer,
            "ended_at": None,
            "items": {
                "object": "list",
                "data": [item],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            "latest_invoice": None,
            "livemode": mode == "live",
            "metadata": metadata,
            "plan": item["plan"],
            "quantity": 1,
            "start_date": now,
            "status": "active",
            "trial_end": None,
            "trial_start": None,
        }
        self.modes[mode].subscriptions[sub_id] = sub
        return sub

    def _create_invoice(
        self, mode: str, sub: dict[str, Any], reason: str, *, paid: bool
    ) -> dict[str, Any]:
        now = int(time.time())
        item = sub["items"]["data"][0]
        amount = item["price"]["unit_amount"]
        inv_id = new_id("in")
        invoice = {
            "id": inv_id,
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount,
            "attempt_count": 1,
            "attempted": True,
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": "usd",
            "customer": sub["customer"],
            "hosted_invoice_url": f"{self.url}/i/{inv_id}",
            "livemode": mode == "live",
            "metadata": {},
            "next_payment_attempt": None if paid else now + 3 * 24 * 3600,
            "number": f"FAKE-{next(_COUNTER):04d}",
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(sub["metadata"]),
                    "subscription": sub["id"],
                },
            },
            "period_end": item["current_period_end"],
            "period_start": item["current_period_start"],
            "status": "paid" if paid else "open",
            "status_transitions": {
                "finalized_at": now,
                "paid_at": now if paid else None,
                "marked_uncollectible_at": None,
                "voided_at": None,
            },
            "total": amount,
        }
        self.modes[mode].invoices[inv_id] = invoice
        sub["latest_invoice"] = inv_id
        return invoice

    def _sub(self, mode: str, sub_id: str) -> dict[str, Any]:
        sub = self.modes[mode].subscriptions.get(sub_id)
        if sub is None:
            raise missing("subscription", sub_id)
        return sub

    def _emit(
        self,
        mode: str,
        type_: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record the event (a snapshot of `obj`) and queue its deliveries."""
        snapshot = json.loads(json.dumps({k: v for k, v in obj.items() if not k.startswith("_")}))
        data: dict[str, Any] = {"object": snapshot}
        if previous:
            data["previous_attributes"] = previous
        endpoints = [e for e in self.endpoints if e.mode == mode]
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": data,
            "livemode": mode == "live",
            "pending_webhooks": len(endpoints),
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.modes[mode].events.append(event)
        payload = json.dumps(event, indent=2).encode()  # Stripe pretty-prints its payloads
        drop = next(
            (i for i, t in enumerate(self._drop) if t is None or t == type_),
            None,
        )
        if drop is not None:
            self._drop.pop(drop)
            return event
        copies = 1
        if self._duplicate:
            self._duplicate -= 1
            copies = 2
        for endpoint in endpoints:
            for _ in range(copies):
                d = Delivery(str(event["id"]), endpoint, payload)
                self.deliveries.append(d)
                if self._holding:
                    self._held.append(d)
                else:
                    self._queue.put((time.monotonic(), next(_COUNTER), d))
        return event

    # ------------------------------------------------------------------ webhook delivery

    def _deliver_loop(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while True:
                due, _, d = self._queue.get()
                if d is None:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    # Not due yet: put it back and sleep a little (new, earlier items may come).
                    self._queue.put((due, next(_COUNTER), d))
                    time.sleep(min(wait, 0.05))
                    continue
                self._attempt(client, d)

    def _attempt(self, client: httpx.Client, d: Delivery) -> None:
        with self._lock:
            if d.endpoint not in self.endpoints:
                return  # the endpoint was removed: Stripe stops delivering to it
        d.attempts += 1
        try:
            resp = client.post(
                d.endpoint.url,
                content=d.payload,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    "Stripe-Signature": sign_payload(d.payload, d.endpoint.secret),
                },
            )
            outcome: int | str = resp.status_code
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        with self._lock:
            d.statuses.append(outcome)
            if isinstance(outcome, int) and 200 <= outcome < 300:
                d.delivered = True
                return
        if d.attempts <= len(self.retry_delays):
            delay = self.retry_delays[d.attempts - 1]
            self._queue.put((time.monotonic() + delay, next(_COUNTER), d))

    # ------------------------------------------------------------------ HTTP API

    def routes(self) -> list[Route]:
        return [
            Route("/v1/customers", self._api(self.create_customer), methods=["POST"]),
            Route("/v1/customers/{id}", self._api(self.get_customer), methods=["GET"]),
            Route("/v1/prices/{id}", self._api(self.get_price), methods=["GET"]),
            Route("/v1/checkout/sessions", self._api(self.create_session), methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", self._api(self.get_session), methods=["GET"]),
            Route("/v1/billing_portal/sessions", self._api(self.create_portal), methods=["POST"]),
            Route("/v1/subscriptions", self._api(self.list_subscriptions), methods=["GET"]),
            Route("/v1/subscriptions/{id}", self._api(self.get_subscription), methods=["GET"]),
            Route("/v1/invoices", self._api(self.list_invoices), methods=["GET"]),
            Route("/v1/invoices/{id}", self._api(self.get_invoice), methods=["GET"]),
            Route("/v1/events", self._api(self.list_events), methods=["GET"]),
            Route("/v1/events/{id}", self._api(self.get_event), methods=["GET"]),
            # What the customer's browser and `make up` use.
            Route("/c/pay/{id}", self.pay_page, methods=["GET", "POST"]),
            Route("/p/session/{id}", self.portal_page, methods=["GET"]),
            Route("/_fake/endpoints", self.register_endpoint, methods=["POST"]),
            Route("/", self.index_page, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/healthz", self.readyz, methods=["GET"]),
        ]

    def _api(
        self, handler: Callable[[str, Request, dict[str, Any]], Any]
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                mode = self._auth(request)
                if request.method == "POST":
                    params = decode_form(parse_qsl((await request.body()).decode(), True))
                else:
                    params = decode_form(list(request.query_params.multi_items()))
                with self._lock:
                    self.requests.append((request.method, request.url.path, mode))
                    status = self._script.pop(0) if self._script else None
                if status == 429:
                    raise StripeError(
                        429, "invalid_request_error", "Too many requests", "rate_limit"
                    )
                if status:
                    raise StripeError(status, "api_error", "Scripted failure")
                key = request.headers.get("idempotency-key")
                if request.method == "POST" and key:
                    return self._idempotent(mode, key, request, handler, params)
                with self._lock:
                    body = handler(mode, request, params)
                return JSONResponse(body, headers={"Request-Id": f"req_{secrets.token_hex(7)}"})
            except StripeError as exc:
                return exc.response()

        return endpoint

    def _idempotent(
        self,
        mode: str,
        key: str,
        request: Request,
        handler: Callable[[str, Request, dict[str, Any]], Any],
        params: dict[str, Any],
    ) -> Response:
        fingerprint = json.dumps([request.url.path, params], sort_keys=True)
        with self._lock:
            seen = self.modes[mode].idempotency.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return JSONResponse(
                    seen[2], status_code=seen[1], headers={"Idempotent-Replayed": "true"}
                )
            body = handler(mode, request, params)
            self.modes[mode].idempotency[key] = (fingerprint, 200, body)
        return JSONResponse(body)

    def _auth(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip()
        for mode, key in self.keys.items():
            if token and hmac.compare_digest(token, key):
                return mode
        shown = f"{token[:8]}{'*' * 10}{token[-4:]}" if token else ""
        raise StripeError(
            401, "invalid_request_error", f"Invalid API Key provided: {shown}", "api_key_invalid"
        )

    # -- customers / prices
    def create_customer(self, mode: str, _r: Request, p: dict[str, Any]) -> dict[str, Any]:
        return self._create_customer(mode, p)

    def get_customer(self, mode: str, r: Request, _p: dict[str, Any]) -> dict[str, Any]:
        cus = self.modes[mode].customers.get(r.path_params["id"])
        if cus is None:
            raise missing("customer", r.path_params["id"])
        return cus

    def get_price(self, mode: str, r: Request, _p: dict[str, Any]) -> dict[str, Any]:
        price = self.modes[mode].prices.get(r.path_params["id"])
        if price is None:
            raise missing("price", r.path_params["id"])
        return price

    # -- checkout
    def create_session(self, mode: str, _r: Request, p: dict[str, Any]) -> dict[str, Any]:
        data = self.modes[mode]
        if p.get("mode") not in ("payment", "setup", "subscription"):
            raise StripeError(
                400,
                "invalid_request_error",
                "Missing required param: mode.",
                "parameter_missing",
                "mode",
            )
        for name in ("success_url",):
            if not p.get(name) and p.get("ui_mode") != "embedded":
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"Missing required param: {name}.",
                    "parameter_missing",
                    name,
                )
        lines = p.get("line_items") or []
        if not lines:
            raise StripeError(
                400,
                "invalid_request_error",
                "Missing required param: line_items.",
                "parameter_missing",
                "line_items",
            )
        for i, line in enumerate(lines):
            if line.get("price") not in data.prices:
                raise missing("price", str(line.get("price")), f"line_items[{i}][price]")
        customer = p.get("customer")
        if customer and customer not in data.customers:
            raise missing("customer", customer, "customer")
        now = int(time.time())
        prefix = "cs_live" if mode == "live" else "cs_test"
        sid = f"{prefix}_{secrets.token_hex(24)}"
        amount = sum(
            data.prices[li["price"]]["unit_amount"] * int(li.get("quantity", 1)) for li in lines
        )
        session = {
            "id": sid,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "created": now,
            "currency": "usd",
            "customer": customer,
            "customer_email": p.get("customer_email"),
            "expires_at": now + 24 * 3600,
            "invoice": None,
            "livemode": mode == "live",
            "metadata": dict(p.get("metadata") or {}),
            "mode": p["mode"],
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": p.get("success_url"),
            "url": f"{self.url}/c/pay/{sid}",
            "_line_items": [
                {"price": li["price"], "quantity": int(li.get("quantity", 1))} for li in lines
            ],
            "_subscription_metadata": dict(
                (p.get("subscription_data") or {}).get("metadata") or {}
            ),
        }
        data.sessions[sid] = session
        return _public(session)

    def get_session(self, mode: str, r: Request, _p: dict[str, Any]) -> dict[str, Any]:
        session = self.modes[mode].sessions.get(r.path_params["id"])
        if session is None:
            raise missing("checkout.session", r.path_params["id"])
        return _public(session)

    def create_portal(self, mode: str, _r: Request, p: dict[str, Any]) -> dict[str, Any]:
        customer = p.get("customer")
        if not customer:
            raise StripeError(
                400,
                "invalid_request_error",
                "Missing required param: customer.",
                "parameter_missing",
                "customer",
            )
        if customer not in self.modes[mode].customers:
            raise missing("customer", customer, "customer")
        bps_id = new_id("bps")
        portal = {
            "id": bps_id,
            "object": "billing_portal.session",
            "created": int(time.time()),
            "customer": customer,
            "livemode": mode == "live",
            "return_url": p.get("return_url"),
            "url": f"{self.url}/p/session/{bps_id}",
        }
        self.modes[mode].portal_sessions[bps_id] = portal
        return portal

    # -- subscriptions / invoices
    def get_subscription(self, mode: str, r: Request, _p: dict[str, Any]) -> dict[str, Any]:
        return self._sub(mode, r.path_params["id"])

    def list_subscriptions(self, mode: str, _r: Request, p: dict[str, Any]) -> dict[str, Any]:
        status = p.get("status")
        items = [
            s
            for s in self.modes[mode].subscriptions.values()
            if (not p.get("customer") or s["customer"] == p["customer"])
            and (
                status == "all"
                or (status is None and s["status"] != "canceled")
                or s["status"] == status
            )
        ]
        items.sort(key=lambda s: s["created"], reverse=True)
        return _page(items, p, "/v1/subscriptions")

    def get_invoice(self, mode: str, r: Request, _p: dict[str, Any]) -> dict[str, Any]:
        invoice = self.modes[mode].invoices.get(r.path_params["id"])
        if invoice is None:
            raise missing("invoice", r.path_params["id"])
        return invoice

    def list_invoices(self, mode: str, _r: Request, p: dict[str, Any]) -> dict[str, Any]:
        items = [
            i
            for i in self.modes[mode].invoices.values()
            if not p.get("customer") or i["customer"] == p["customer"]
        ]
        items.sort(key=lambda i: i["created"], reverse=True)
        return _page(items, p, "/v1/invoices")

    # -- events
    def get_event(self, mode: str, r: Request, _p: dict[str, Any]) -> dict[str, Any]:
        for e in self.modes[mode].events:
            if e["id"] == r.path_params["id"]:
                return e
        raise missing("event", r.path_params["id"])

    def list_events(self, mode: str, _r: Request, p: dict[str, Any]) -> dict[str, Any]:
        created = p.get("created")
        bounds: dict[str, int] = {}
        if isinstance(created, dict):
            bounds = {k: int(v) for k, v in created.items()}
        elif created is not None:
            bounds = {"eq": int(created)}
        types = set(p.get("types") or ([p["type"]] if p.get("type") else []))

        def keep(e: dict[str, Any]) -> bool:
            c = e["created"]
            ok = (
                ("gt" not in bounds or c > bounds["gt"])
                and ("gte" not in bounds or c >= bounds["gte"])
                and ("lt" not in bounds or c < bounds["lt"])
                and ("lte" not in bounds or c <= bounds["lte"])
                and ("eq" not in bounds or c == bounds["eq"])
            )
            if types:
                ok = ok and any(
                    t == e["type"] or (t.endswith(".*") and e["type"].startswith(t[:-1]))
                    for t in types
                )
            return ok

        newest_first = [e for e in reversed(self.modes[mode].events) if keep(e)]
        return _page(newest_first, p, "/v1/events")

    # -- pages for people (make up)
    async def pay_page(self, request: Request) -> Response:
        sid = request.path_params["id"]
        mode = "live" if sid.startswith("cs_live") else "test"
        with self._lock:
            session = self.modes[mode].sessions.get(sid)
        if session is None:
            return HTMLResponse("<p>No such checkout session.</p>", status_code=404)
        if request.method == "POST":
            done = self.complete_checkout(sid, mode)
            return RedirectResponse(done["success_url"] or "/", status_code=303)
        price = session["_line_items"][0]["price"]
        if session["status"] != "open":
            return HTMLResponse(
                f"{_FAKE_BANNER}<p>This checkout session is {html.escape(session['status'])}.</p>",
                status_code=409,
            )
        cancel = session.get("cancel_url")
        return HTMLResponse(
            "<!doctype html><title>Fake Stripe Checkout</title>"
            f"{_FAKE_BANNER}"
            f"<h1>Checkout ({'live' if mode == 'live' else 'test'} mode)</h1>"
            f"<p>Subscribe to <b>{html.escape(price)}</b>"
            f" ({session['amount_total'] / 100:.2f} USD/month)</p>"
            '<form method="post"><button id="pay" type="submit">Pay</button></form>'
            + (f'<p><a id="cancel" href="{html.escape(cancel)}">Cancel</a></p>' if cancel else "")
        )

    async def portal_page(self, request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><title>Fake Stripe customer portal</title>"
            f"{_FAKE_BANNER}"
            "<p>Plan changes happen here in Stripe; the fake changes them from tests.</p>"
        )

    async def index_page(self, request: Request) -> Response:
        rows = "".join(
            f"<li>{html.escape(e.mode)}: {html.escape(e.url)}</li>" for e in self.endpoints
        )
        return HTMLResponse(
            "<!doctype html><title>Fake Stripe</title>"
            f"{_FAKE_BANNER}"
            f"<p>Stripe's REST API under <code>/v1</code> (API version {API_VERSION}) for the"
            " billing service; Checkout Sessions open at <code>/c/pay/&lt;id&gt;</code>.</p>"
            f"<p>Webhook endpoints:</p><ul>{rows}</ul>"
        )

    async def readyz(self, request: Request) -> Response:
        return JSONResponse({"status": "ready", "fake": True})

    async def register_endpoint(self, request: Request) -> Response:
        body = await request.json()
        self.add_endpoint(body["url"], body["secret"], body.get("mode", "live"))
        return JSONResponse({"ok": True})

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> FakeStripe:
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        server_thread = threading.Thread(target=self._server.run, daemon=True)
        delivery_thread = threading.Thread(target=self._deliver_loop, daemon=True)
        self._threads = [server_thread, delivery_thread]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake Stripe did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._queue.put((0.0, -1, None))
        if self._server is not None:
            self._server.should_exit = True
        for t in self._threads:
            t.join(10)


_FAKE_BANNER = (
    '<p style="background:#fde68a;padding:.5em;border:1px solid #b45309">'
    "<b>FAKE Stripe</b> for local development and tests: no money moves, nothing leaves this"
    " machine.</p>"
)


def _plan_of(price: dict[str, Any]) -> dict[str, Any]:
    # The legacy `plan` mirror of the price that Stripe still returns on subscriptions.
    return {
        "id": price["id"],
        "object": "plan",
        "amount": price["unit_amount"],
        "currency": price["currency"],
        "interval": "month",
        "interval_count": 1,
        "livemode": price["livemode"],
        "product": price["product"],
    }


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _page(items: list[dict[str, Any]], p: dict[str, Any], url: str) -> dict[str, Any]:
    limit = max(1, min(int(p.get("limit", 10)), 100))
    after = p.get("starting_after")
    if after:
        ids = [i["id"] for i in items]
        if after not in ids:
            raise missing("object", after, "starting_after")
        items = items[ids.index(after) + 1 :]
    return {
        "object": "list",
        "data": [_public(i) for i in items[:limit]],
        "has_more": len(items) > limit,
        "url": url,
    }


def main() -> None:
    """Serve the fake until SIGTERM/SIGINT. Keys and webhook secrets come from the environment
    (FAKE_STRIPE_LIVE_KEY, FAKE_STRIPE_TEST_KEY, FAKE_STRIPE_WEBHOOK_SECRET,
    FAKE_STRIPE_TEST_WEBHOOK_SECRET), defaults otherwise; events of both modes go to
    --webhook-url, each signed with its mode's secret."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.stripe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook-url", help="deliver live- and test-mode events here")
    args = parser.parse_args()
    env = os.environ
    keys = {
        "live": env.get("FAKE_STRIPE_LIVE_KEY", DEFAULT_KEYS["live"]),
        "test": env.get("FAKE_STRIPE_TEST_KEY", DEFAULT_KEYS["test"]),
    }
    fake = FakeStripe(keys=keys).start(args.port)
    if args.webhook_url:
        fake.add_endpoint(
            args.webhook_url, env.get("FAKE_STRIPE_WEBHOOK_SECRET", "whsec_fake_dev_live"), "live"
        )
        fake.add_endpoint(
            args.webhook_url,
            env.get("FAKE_STRIPE_TEST_WEBHOOK_SECRET", "whsec_fake_dev_test"),
            "test",
        )
    print(f"FAKE Stripe (no real payments) on {fake.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    fake.stop()


if __name__ == "__main__":
    main()
