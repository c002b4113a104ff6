"""The public route map: which service owns a path, how callers authenticate, which scope
each method needs. The gateway forwards by path prefix and keeps the path unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Auth = Literal["none", "credentials", "user"]

USER_ROLES_ALL = frozenset({"owner", "admin", "member"})


@dataclass(frozen=True)
class RouteRule:
    """`prefix` matches itself and anything below it (`/x` matches `/x` and `/x/...`)."""

    name: str
    prefix: str
    service: str
    auth: Auth
    # Scope per HTTP method; "*" is the default for methods not listed.
    scopes: dict[str, str] = field(default_factory=dict)
    # For auth="user": which dashboard roles may call it.
    roles: frozenset[str] = USER_ROLES_ALL
    # Only these exact paths (under the prefix) for these methods, when set.
    exact: tuple[str, ...] = ()
    # A long-lived `text/event-stream` answer: relayed unbuffered, without the total timeout.
    stream: bool = False

    def matches(self, path: str) -> bool:
        if self.exact:
            return path in self.exact
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")

    def scope_for(self, method: str) -> str | None:
        return self.scopes.get(method, self.scopes.get("*"))


def _scoped(scope: str) -> dict[str, str]:
    return {"*": scope}


# Order matters: the first rule that matches wins (specific before general).
ROUTES: tuple[RouteRule, ...] = (
    RouteRule("auth", "/api/v1/auth", "keys", "none"),
    RouteRule(
        "api-keys",
        "/api/v1/platform/api-keys",
        "keys",
        "user",
        roles=frozenset({"owner", "admin"}),
    ),
    RouteRule(
        "contacts", "/api/v1/contacts", "campaigns", "credentials", _scoped("manage_contacts")
    ),
    RouteRule(
        "templates", "/api/v1/templates", "campaigns", "credentials", _scoped("manage_templates")
    ),
    RouteRule(
        "campaigns", "/api/v1/campaigns", "campaigns", "credentials", _scoped("manage_campaigns")
    ),
    RouteRule(
        "analytics", "/api/v1/analytics", "campaigns", "credentials", _scoped("read_analytics")
    ),
    RouteRule(
        "emails-send",
        "/api/v1/emails",
        "delivery",
        "credentials",
        {"POST": "send_email"},
        exact=("/api/v1/emails/send", "/api/v1/emails/send-bulk"),
    ),
    # Reading emails needs read_analytics; any other write under /emails needs send_email.
    RouteRule(
        "emails",
        "/api/v1/emails",
        "delivery",
        "credentials",
        {"GET": "read_analytics", "HEAD": "read_analytics", "*": "send_email"},
    ),
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
