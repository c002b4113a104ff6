# ruff: noqa: S603  (runs the local broker's own rabbitmqctl with fixed arguments)
"""Per-service RabbitMQ users: each service connects as its own user, which may publish to
`pm.events` only the routing keys (event types) that service produces (RabbitMQ topic
permissions), and may declare, bind and consume only its own queues (`<service>.*`).

A compromised delivery process can therefore not publish `tenant.plan_changed` (only keys
and billing produce it) nor read another service's queue. The `guest` user and any other
existing user are never changed: users are added, in a vhost the caller names.

Provisioning (idempotent; re-run after a release adds an event type):
- dev and tests: `provision_amqp_users(..., rabbitmqctl=True)` (local broker, `rabbitmqctl`);
- compose and Kubernetes: the management HTTP API,
  `python -m libs.common.amqp_users provision --management-url https://admin:pw@host:15672
  --vhost pm --amqp-url amqp://host:5672` prints each service's AMQP URL (JSON) for
  `secret/<service>/rabbitmq#url` (docs/operations.md "RabbitMQ users").
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from libs.common.events import EVENT_TYPES
from libs.common.settings import SERVICE_NAMES

EXCHANGE = "pm.events"

# The event types each service publishes on `pm.events` (its outbox relay's routing keys).
# `family.*` means every type of that family. tests/unit/common/test_amqp_users.py checks
# that every type in the catalog has a producer here.
PUBLISHES: dict[str, tuple[str, ...]] = {
    "gateway": (),
    "keys": (
        "api_key.created",
        "api_key.revoked",
        "api_key.regenerated",
        "tenant.created",
        "tenant.plan_changed",
    ),
    "campaigns": (
        "campaign.*",
        "contact.*",
        "contact_import.*",
        "email.requested",
        "analytics.updated",
        "goal.converted",
        "revenue.recorded",
    ),
    "delivery": (
        "email.queued",
        "email.sent",
        "email.delivered",
        "email.opened",
        "email.clicked",
        "email.replied",
        "email.bounced",
        "email.complained",
        "email.unsubscribed",
        "email.failed",
        "email_batch.queued",
        "domain.*",
        "sending_settings.updated",
    ),
    "webhooks": ("webhook.endpoint_disabled",),
    "billing": ("stripe_event.received", "tenant.plan_changed"),
}

# Server-named exclusive queues (the gateway's eviction listener) are `amq.gen-...`.
_EXTRA_QUEUES: dict[str, tuple[str, ...]] = {"gateway": (r"amq\.gen-.*",)}


def _pattern(routing_key: str) -> str:
    if routing_key.endswith(".*"):
        return re.escape(routing_key[:-2]) + r"\.[^.]+"
    return re.escape(routing_key)


@dataclass(frozen=True)
class AmqpPermissions:
    """`set_permissions` (configure, write, read) and `set_topic_permissions` on EXCHANGE."""

    configure: str
    write: str
    read: str
    topic_write: str
    topic_read: str = ".*"


def permissions(service: str) -> AmqpPermissions:
    own = [re.escape(EXCHANGE), re.escape(service) + r"\..*", *_EXTRA_QUEUES.get(service, ())]
    resources = "^(" + "|".join(own) + ")$"
    keys = [_pattern(k) for k in PUBLISHES[service]]
    # No key at all: an alternative that never matches (an empty regex would match all).
    topic = "^(" + "|".join(keys) + ")$" if keys else "^$a"
    # Write also on the default exchange: the bus parks retries and dead letters in the
    # service's own delay queues and DLQ through it (libs/common/bus.py).
    write = "^(" + "|".join([*own, r"amq\.default"]) + ")$"
    return AmqpPermissions(configure=resources, write=write, read=resources, topic_write=topic)


def user_name(service: str, prefix: str = "pm") -> str:
    return f"{prefix}-{service}"


def may_publish(service: str, routing_key: str) -> bool:
    return re.fullmatch(permissions(service).topic_write, routing_key) is not None


def _amqp_url(base: str, vhost: str, user: str, password: str) -> str:
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5672
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    path = "/" + quote(vhost, safe="")
    return urlunsplit((parts.scheme or "amqp", f"{auth}@{host}:{port}", path, "", ""))


def _ctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()}")


def provision_amqp_users(
    vhost: str,
    passwords: Mapping[str, str],
    *,
    amqp_url: str = "amqp://127.0.0.1:5672",
    prefix: str = "pm",
    management_url: str | None = None,
) -> dict[str, str]:
    """Create or update one user per service in `passwords` in `vhost` (which must exist),
    with its permissions; returns service -> AMQP URL. Through the management HTTP API when
    `management_url` (with admin credentials) is given, else the local `rabbitmqctl`."""
    urls: dict[str, str] = {}
    client = None
    if management_url is not None:
        parts = urlsplit(management_url)
        base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 15672}", "", "", ""))
        client = httpx.Client(
            base_url=base + "/api", auth=(parts.username or "", parts.password or ""), timeout=30
        )
    try:
        for service, password in passwords.items():
            if service not in PUBLISHES:
                raise ValueError(f"no AMQP permissions for service {service!r}")
            user, perms = user_name(service, prefix), permissions(service)
            if client is None:
                # add_user fails if the user exists: then only its password is set.
                exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
                added = subprocess.run(
                    [exe, "-q", "add_user", user, password], capture_output=True, timeout=60
                )
                if added.returncode != 0:
                    _ctl("change_password", user, password)
                _ctl("set_permissions", "-p", vhost, user, perms.configure, perms.write, perms.read)
                _ctl(
                    "set_topic_permissions", "-p", vhost, user, EXCHANGE,
                    perms.topic_write, perms.topic_read,
                )  # fmt: skip
            else:
                v, u = quote(vhost, safe=""), quote(user, safe="")
                for path, body in (
                    (f"/users/{u}", {"password": password, "tags": ""}),
                    (
                        f"/permissions/{v}/{u}",
                        {"configure": perms.configure, "write": perms.write, "read": perms.read},
                    ),
                    (
                        f"/topic-permissions/{v}/{u}",
                        {
                            "exchange": EXCHANGE,
                            "write": perms.topic_write,
                            "read": perms.topic_read,
                        },
                    ),
                ):
                    client.put(path, json=body).raise_for_status()
            urls[service] = _amqp_url(amqp_url, vhost, user, password)
        return urls
    finally:
        if client is not None:
            client.close()


def delete_amqp_users(services: list[str], *, prefix: str = "pm") -> None:
    """Remove the users (rabbitmqctl; tests clean up after themselves)."""
    for service in services:
        exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        subprocess.run([exe, "-q", "delete_user", user_name(service, prefix)], capture_output=True)


def unproduced_event_types() -> list[str]:
    """Catalog event types no service may publish (should be none)."""
    return sorted(t for t in EVENT_TYPES if not any(may_publish(s, t) for s in PUBLISHES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.common.amqp_users")
    sub = parser.add_subparsers(dest="command", required=True)
    prov = sub.add_parser("provision", help="create/update the per-service users")
    prov.add_argument("--vhost", required=True)
    prov.add_argument("--management-url", default=None, help="https://admin:pw@host:15672")
    prov.add_argument("--amqp-url", default="amqp://127.0.0.1:5672", help="host the URLs name")
    prov.add_argument("--prefix", default="pm")
    prov.add_argument("--services", default=",".join(SERVICE_NAMES))
    show = sub.add_parser("permissions", help="print each service's permission regexes")
    show.add_argument("--services", default=",".join(SERVICE_NAMES))
    args = parser.parse_args(argv)
    services = [s for s in args.services.split(",") if s]
    if args.command == "permissions":
        print(json.dumps({s: permissions(s).__dict__ for s in services}, indent=2))
        return 0
    passwords = {s: secrets.token_urlsafe(24) for s in services}
    urls = provision_amqp_users(
        args.vhost,
        passwords,
        amqp_url=args.amqp_url,
        prefix=args.prefix,
        management_url=args.management_url,
    )
    json.dump(urls, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
