"""Pure logic of the gateway: the route map, the local token bucket, rate-limit headers,
idempotency fingerprints."""

from __future__ import annotations

import pytest

from libs.common.http import ApiError
from services.gateway.idempotency import fingerprint, validate_key
from services.gateway.ratelimit import PLAN_LIMITS, LocalLimiter, PlanLimits, rate_limit_headers
from services.gateway.routes import has_dot_segments, match_route


@pytest.mark.parametrize(
    ("method", "path", "route", "scope"),
    [
        ("POST", "/api/v1/auth/login", "auth", None),
        ("GET", "/api/v1/platform/api-keys/key_1/usage", "api-keys", None),
        ("GET", "/api/v1/contacts", "contacts", "manage_contacts"),
        ("DELETE", "/api/v1/contacts/ct_1", "contacts", "manage_contacts"),
        ("GET", "/api/v1/templates/t", "templates", "manage_templates"),
        ("POST", "/api/v1/campaigns", "campaigns", "manage_campaigns"),
        ("GET", "/api/v1/analytics/campaigns/c", "analytics", "read_analytics"),
        ("POST", "/api/v1/emails/send", "emails-send", "send_email"),
        ("POST", "/api/v1/emails/send-bulk", "emails-send", "send_email"),
        ("GET", "/api/v1/emails/msg_1", "emails", "read_analytics"),
        ("POST", "/api/v1/emails/msg_1/cancel", "emails", "send_email"),
        ("GET", "/api/v1/webhooks", "webhooks", "manage_webhooks"),
        ("GET", "/api/v1/events/types", "events", None),
        ("GET", "/api/v1/events/stream", "events-stream", None),
        ("POST", "/api/v1/events/trigger", "events", None),
        ("GET", "/api/v1/billing/invoices", "billing", None),
        ("POST", "/hooks/esp/postmark", "esp-hooks", None),
        ("POST", "/hooks/esp/postmark/inbound", "esp-inbound", None),
        ("POST", "/hooks/esp/ses/inbound", "esp-inbound", None),
        ("GET", "/api/v1/inbox/threads", "inbox", "read_inbox"),
        ("PATCH", "/api/v1/inbox/threads/thr_1", "inbox", "read_inbox"),
        ("GET", "/api/v1/inbox/messages/imsg_1/raw", "inbox", "read_inbox"),
        ("POST", "/hooks/stripe", "stripe-hook", None),
        ("GET", "/t/o/abc.gif", "tracking", None),
        ("GET", "/unsubscribe/tok", "unsubscribe", None),
    ],
)
def test_route_map(method: str, path: str, route: str, scope: str | None) -> None:
    rule = match_route(path)
    assert rule is not None and rule.name == route
    # Inbound mail and the inbox API are the inbox service's; ESP events stay delivery's.
    if route.startswith(("inbox", "esp-inbound")):
        assert rule.service == "inbox"
    assert rule.scopes_for(method) == (frozenset({scope}) if scope else frozenset())


@pytest.mark.parametrize(
    ("method", "path", "route", "scopes", "roles"),
    [
        ("POST", "/api/v1/campaigns/c1/start", "campaign-start",
         {"manage_campaigns", "send_email"}, None),
        ("POST", "/api/v1/campaigns/c1/resume", "campaign-start",
         {"manage_campaigns", "send_email"}, None),
        ("POST", "/api/v1/campaigns/c1/pause", "campaigns", {"manage_campaigns"}, None),
        ("POST", "/api/v1/campaigns/c1/start/x", "campaigns", {"manage_campaigns"}, None),
        ("DELETE", "/api/v1/emails/suppressions/a@b.c", "suppressions", {"send_email"},
         {"owner", "admin"}),
        ("POST", "/api/v1/emails/suppressions", "suppressions", {"send_email"}, None),
        ("GET", "/api/v1/emails/suppressions", "suppressions", {"read_analytics"}, None),
        ("POST", "/api/v1/inbox/threads/thr_1/reply", "inbox-reply",
         {"read_inbox", "send_email"}, None),
        ("GET", "/api/v1/inbox/threads/thr_1/reply", "inbox-reply", {"read_inbox"}, None),
    ],
)  # fmt: skip
def test_scope_sets_and_roles(
    method: str, path: str, route: str, scopes: set[str], roles: set[str] | None
) -> None:
    rule = match_route(path)
    assert rule is not None and rule.name == route
    assert rule.scopes_for(method) == scopes
    assert rule.roles_for(method) == roles


@pytest.mark.parametrize(
    "path", ["/api/v1/contactsx", "/api/v1", "/api/v1/unknown", "/hooks/stripex", "/"]
)
def test_unmapped_paths(path: str) -> None:
    assert match_route(path) is None


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("/api/v1/contacts/../platform/api-keys", True),
        ("/api/v1/contacts/./x", True),
        ("/api/v1//contacts", True),
        ("/api/v1/contacts/..", True),
        ("/api/v1/contacts/", False),
        ("/api/v1/contacts/a..b", False),
    ],
)
def test_dot_segments(path: str, bad: bool) -> None:
    assert has_dot_segments(path) is bad


def test_local_bucket_allows_60_then_refills_one_per_second() -> None:
    limiter = LocalLimiter()
    now = 1_700_000_000_000
    results = [
        limiter.hit("k", PLAN_LIMITS["starter"], tenant_id="t", now_ms=now) for _ in range(61)
    ]
    assert [r.allowed for r in results] == [True] * 60 + [False]
    assert results[60].retry_after_ms == 1000
    assert limiter.hit("k", PLAN_LIMITS["starter"], tenant_id="t", now_ms=now + 1000).allowed
    assert not limiter.hit("k", PLAN_LIMITS["starter"], tenant_id="t", now_ms=now + 1000).allowed
    # Upgrade: the larger burst applies at once.
    assert all(
        limiter.hit("k", PLAN_LIMITS["pro"], tenant_id="t", now_ms=now + 1000).allowed
        for _ in range(240)
    )


def test_local_hourly_quota() -> None:
    limiter = LocalLimiter()
    tiny = PlanLimits(per_minute=100, per_hour=2)
    now = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    assert [limiter.hit("k", tiny, tenant_id="t", now_ms=now).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert limiter.hit("k", tiny, tenant_id="t", now_ms=now + 3_600_000).allowed


def test_headers_name_the_binding_policy() -> None:
    limiter = LocalLimiter()
    now = 1_700_000_000_000
    first = limiter.hit("k", PLAN_LIMITS["starter"], tenant_id="t", now_ms=now)
    headers = rate_limit_headers(first)
    assert headers["X-RateLimit-Limit"] == "60"
    assert headers["X-RateLimit-Remaining"] == "59"
    assert headers["X-RateLimit-Reset"] == str((now + 1000) // 1000)
    assert headers["RateLimit-Policy"] == '"minute";q=60;w=60, "hour";q=10000;w=3600'
    assert headers["RateLimit"] == '"minute";r=59;t=1'
    assert "Retry-After" not in headers
    for _ in range(60):
        last = limiter.hit("k", PLAN_LIMITS["starter"], tenant_id="t", now_ms=now)
    refused = rate_limit_headers(last)
    assert refused["Retry-After"] == "1"
    assert refused["X-RateLimit-Remaining"] == "0"
    tiny = PlanLimits(per_minute=100, per_hour=1)
    limiter.hit("h", tiny, tenant_id="t", now_ms=now)
    by_hour = rate_limit_headers(limiter.hit("h", tiny, tenant_id="t", now_ms=now))
    assert by_hour["X-RateLimit-Limit"] == "1"
    assert by_hour["RateLimit"].startswith('"hour";r=0;')


def test_idempotency_fingerprint_and_key_validation() -> None:
    base = fingerprint("POST", "/api/v1/contacts", "", b'{"a":1}')
    assert base == fingerprint("POST", "/api/v1/contacts", "", b'{"a":1}')
    assert base != fingerprint("POST", "/api/v1/contacts", "", b'{"a":2}')
    assert base != fingerprint("POST", "/api/v1/contacts", "x=1", b'{"a":1}')
    assert validate_key("order-123") == "order-123"
    for bad in ("", "k" * 256, "tab\there"):
        with pytest.raises(ApiError):
            validate_key(bad)


def test_keys_of_one_tenant_share_the_tenant_bucket() -> None:
    limiter = LocalLimiter()
    now = 1_700_000_000_000
    free = PLAN_LIMITS["free"]
    first = [limiter.hit("key:a", free, tenant_id="ten_1", now_ms=now) for _ in range(20)]
    assert all(d.allowed for d in first)
    # A second key of the same tenant finds the tenant's minute spent; another tenant does not.
    assert not limiter.hit("key:b", free, tenant_id="ten_1", now_ms=now).allowed
    assert limiter.hit("key:c", free, tenant_id="ten_2", now_ms=now).allowed


def test_the_plan_table_has_the_free_tier_and_an_internal_unlimited_plan() -> None:
    from libs.common.plans import CUSTOMER_PLANS, PLANS

    assert (PLANS["free"].per_minute, PLANS["free"].per_hour) == (20, 1_000)
    assert CUSTOMER_PLANS == ("free", "starter", "pro", "enterprise")
    assert "unlimited" in PLANS and "unlimited" not in CUSTOMER_PLANS
    caps = [PLANS[p].key_cap for p in CUSTOMER_PLANS]
    assert all(c is not None for c in caps) and caps == sorted(caps)  # type: ignore[type-var]
