# ruff: noqa: S603  (runs the local broker's own rabbitmqctl with fixed arguments)
"""Per-service RabbitMQ users: each service connects as its own user, which may publish to
`pm.events` only the routing keys (event types) that service produces (RabbitMQ topic
permissions), and may declare, bind and consume only its own queues and exchange
(`<service>.*`); it may not write to the default exchange, so it cannot push a message into
another service's queue by name.

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
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

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
        "email.bounced",
        "email.complained",
        "email.unsubscribed",
        "email.failed",
        "domain.*",
        "sending_settings.updated",
    ),
    "inbox": (
        "email.replied",
        "email.auto_replied",
        "inbox_message.received",
        "inbox_feedback.received",
        # A reply written in the inbox is sent by delivery like a campaign step.
        "email.requested",
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
    # Never the default exchange (`amq.default`): through it a service could push a message
    # into any queue by name. Commands, retries and dead letters go through the service's own
    # direct exchange `<service>.direct` (libs/common/bus.py), which `<service>.*` covers.
    return AmqpPermissions(configure=resources, write=resources, read=resources, topic_write=topic)


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


def _password_hash(password: str) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(vhost: str, passwords: Mapping[str, str], *, prefix: str = "pm") -> dict[str, Any]:
    """The users, permissions and topic permissions as a RabbitMQ definitions document
    (`rabbitmqctl import_definitions`, `POST /api/definitions`, or the `load_definitions`
    file of a cluster). Passwords appear only hashed."""
    users, perms, topics = [], [], []
    for service, password in passwords.items():
        if service not in PUBLISHES:
            raise ValueError(f"no AMQP permissions for service {service!r}")
        user, p = user_name(service, prefix), permissions(service)
        users.append(
            {
                "name": user,
                "password_hash": _password_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        perms.append(
            {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write,
             "read": p.read}
        )  # fmt: skip
        topics.append(
            {"user": user, "vhost": vhost, "exchange": EXCHANGE, "write": p.topic_write,
             "read": p.topic_read}
        )  # fmt: skip
    return {"users": users, "permissions": perms, "topic_permissions": topics}


def _rabbitmqctl() -> str:
    return shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def provision_amqp_users(
    vhost: str,
    passwords: Mapping[str, str],
    *,
    amqp_url: str = "amqp://127.0.0.1:5672",
    prefix: str = "pm",
    management_url: str | None = None,
) -> dict[str, str]:
    """Create or update one user per service in `passwords` in `vhost` (which must exist),
    with its permissions, in one definitions import (only these users and their
    permissions; nothing else is touched); returns service -> AMQP URL. Through the
    management HTTP API when `management_url` (admin credentials) is given, else the local
    `rabbitmqctl`."""
    document = definitions(vhost, passwords, prefix=prefix)
    if management_url is not None:
        parts = urlsplit(management_url)
        base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 15672}", "", "", ""))
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        with httpx.Client(base_url=base + "/api", auth=auth, timeout=60) as client:
            # A cluster's first run creates the vhost too (idempotent).
            document = {**document, "vhosts": [{"name": vhost}]}
            client.post("/definitions", json=document).raise_for_status()
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            os.chmod(f.name, 0o644)  # the broker's own user reads it
            json.dump(document, f)
            f.flush()
            done = subprocess.run(
                [_rabbitmqctl(), "-q", "import_definitions", f.name],
                capture_output=True,
                text=True,
                timeout=120,
            )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl import_definitions failed: {done.stderr.strip()}")
    return {
        service: _amqp_url(amqp_url, vhost, user_name(service, prefix), password)
        for service, password in passwords.items()
    }


def delete_amqp_users(services: list[str], *, prefix: str = "pm") -> None:
    """Remove the users (rabbitmqctl; tests clean up after themselves)."""
    for service in services:
        subprocess.run(
            [_rabbitmqctl(), "-q", "delete_user", user_name(service, prefix)], capture_output=True
        )


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
    prov.add_argument(
        "--urls-file", default=None, help="write the URLs (JSON) here instead of stdout"
    )
    prov.add_argument(
        "--vault-kv",
        default=None,
        help="store each URL in Vault KV v2 (VAULT_ADDR, VAULT_TOKEN) at <mount>:<service>/"
        "rabbitmq field url, e.g. --vault-kv secret; prints nothing secret",
    )
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
    if args.vault_kv:
        import hvac

        client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
        for service, url in urls.items():
            client.secrets.kv.v2.create_or_update_secret(
                path=f"{service}/rabbitmq", secret={"url": url}, mount_point=args.vault_kv
            )
            print(f"{service}: {user_name(service, args.prefix)} -> {args.vault_kv}:"
                  f"{service}/rabbitmq#url")  # fmt: skip
    elif args.urls_file:
        with open(args.urls_file, "w", opener=lambda p, f: os.open(p, f, 0o600)) as out:
            json.dump(urls, out, indent=2)
    else:
        json.dump(urls, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
