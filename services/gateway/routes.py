"""The public route map: which service owns a path, how callers authenticate, which scopes
(all of a set) and, for a few operations, which dashboard role each method needs. The gateway
forwards by path prefix and keeps the path unchanged."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Auth = Literal["none", "credentials", "user"]

USER_ROLES_ALL = frozenset({"owner", "admin", "member"})
MANAGERS = frozenset({"owner", "admin"})


@dataclass(frozen=True)
class RouteRule:
    """`prefix` matches itself and anything below it (`/x` matches `/x` and `/x/...`)."""

    name: str
    prefix: str
    service: str
    auth: Auth
    # Scopes per HTTP method, a scope or a set of scopes the caller must ALL hold; "*" is the
    # default for methods not listed.
    scopes: Mapping[str, str | frozenset[str]] = field(default_factory=dict)
    # For auth="user": which dashboard roles may call it.
    roles: frozenset[str] = USER_ROLES_ALL
    # For auth="credentials": per method, the dashboard roles allowed: the user's role, or
    # for an API key the role of the user who created it.
    caller_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    # Only these exact paths (under the prefix) for these methods, when set.
    exact: tuple[str, ...] = ()
    # Forward the request body as it arrives (not buffered), capped at `max_body_bytes`
    # (None: the gateway's PM_MAX_BODY_BYTES, 5 MiB) while it streams.
    stream_body: bool = False
    max_body_bytes: int | None = None
    # Only paths matching this regular expression (whole path), when set.
    pattern: str | None = None
    # A long-lived `text/event-stream` answer: relayed unbuffered, without the total timeout.
    stream: bool = False

    def matches(self, path: str) -> bool:
        if self.exact:
            return path in self.exact
        if self.pattern is not None:
            return re.fullmatch(self.pattern, path) is not None
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")

    def scopes_for(self, method: str) -> frozenset[str]:
        needed = self.scopes.get(method, self.scopes.get("*"))
        if needed is None:
            return frozenset()
        return frozenset({needed}) if isinstance(needed, str) else needed

    def roles_for(self, method: str) -> frozenset[str] | None:
        return self.caller_roles.get(method, self.caller_roles.get("*"))


def _scoped(scope: str) -> dict[str, str]:
    return {"*": scope}


# Contact imports (up to 50,000 rows of JSON or CSV) stream through with their own cap.
IMPORT_MAX_BODY_BYTES = 64 * 1024 * 1024

# Order matters: the first rule that matches wins (specific before general).
ROUTES: tuple[RouteRule, ...] = (
    RouteRule("auth", "/api/v1/auth", "keys", "none"),
    RouteRule(
        "api-keys",
        "/api/v1/platform/api-keys",
        "keys",
        "user",
        roles=MANAGERS,
    ),
    RouteRule(
        "contact-imports",
        "/api/v1/contacts",
        "campaigns",
        "credentials",
        _scoped("manage_contacts"),
        exact=("/api/v1/contacts/import", "/api/v1/contacts/imports"),
        stream_body=True,
        max_body_bytes=IMPORT_MAX_BODY_BYTES,
    ),
    RouteRule(
        "contacts", "/api/v1/contacts", "campaigns", "credentials", _scoped("manage_contacts")
    ),
    RouteRule(
        "templates", "/api/v1/templates", "campaigns", "credentials", _scoped("manage_templates")
    ),
    # Starting (or resuming) a campaign sends email: it needs both scopes.
    RouteRule(
        "campaign-start",
        "/api/v1/campaigns",
        "campaigns",
        "credentials",
        {"POST": frozenset({"manage_campaigns", "send_email"}), "*": "manage_campaigns"},
        pattern=r"/api/v1/campaigns/[^/]+/(start|resume)",
    ),
    RouteRule(
        "campaigns", "/api/v1/campaigns", "campaigns", "credentials", _scoped("manage_campaigns")
    ),
    RouteRule(
        "conversions", "/api/v1/conversions", "campaigns", "credentials", _scoped("manage_contacts")
    ),
    RouteRule(
        "analytics", "/api/v1/analytics", "campaigns", "credentials", _scoped("read_analytics")
    ),
    RouteRule("domains", "/api/v1/domains", "delivery", "credentials", _scoped("manage_domains")),
    RouteRule(
        "emails-send",
        "/api/v1/emails",
        "delivery",
        "credentials",
        {"POST": "send_email"},
        exact=("/api/v1/emails/send", "/api/v1/emails/send-bulk"),
    ),
    # Deleting a suppression lets mail reach an address that opted out or bounced: only an
    # owner or admin (or a key one of them created) may, with send_email.
    RouteRule(
        "suppressions",
        "/api/v1/emails/suppressions",
        "delivery",
        "credentials",
        {"GET": "read_analytics", "HEAD": "read_analytics", "*": "send_email"},
        caller_roles={"DELETE": MANAGERS},
    ),
    # Reading emails needs read_analytics; any other write under /emails needs send_email.
    RouteRule(
        "emails",
        "/api/v1/emails",
        "delivery",
        "credentials",
        {"GET": "read_analytics", "HEAD": "read_analytics", "*": "send_email"},
    ),
    RouteRule("sending", "/api/v1/sending", "delivery", "credentials", _scoped("send_email")),
    RouteRule(
        "webhooks", "/api/v1/webhooks", "webhooks", "credentials", _scoped("manage_webhooks")
    ),
    # The event catalog, stream and triggers: any key may call them; the webhooks service
    # narrows the stream to the types the key's scopes may read (the catalog's `scope`) and
    # requires that scope for a trigger.
    RouteRule(
        "events-stream",
        "/api/v1/events",
        "webhooks",
        "credentials",
        exact=("/api/v1/events/stream",),
        stream=True,
    ),
    RouteRule("events", "/api/v1/events", "webhooks", "credentials"),
    RouteRule("billing", "/api/v1/billing", "billing", "user", roles=frozenset({"owner"})),
    RouteRule("esp-hooks", "/hooks/esp", "delivery", "none"),
    RouteRule("stripe-hook", "/hooks/stripe", "billing", "none"),
    RouteRule("tracking", "/t", "delivery", "none"),
    RouteRule("unsubscribe", "/unsubscribe", "delivery", "none"),
)

UPSTREAM_SERVICES: tuple[str, ...] = ("keys", "campaigns", "delivery", "webhooks", "billing")


def has_dot_segments(path: str) -> bool:
    """`.`/`..` or empty segments would let an upstream resolve a path the map did not check."""
    segments = path.split("/")[1:]
    return any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1:] in ([".."], ["."])


def match_route(path: str) -> RouteRule | None:
    for rule in ROUTES:
        if rule.matches(path):
            return rule
    return None
