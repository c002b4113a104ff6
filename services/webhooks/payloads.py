"""Webhook payloads per payload version, engagement details, and the public event catalog.

Every payload is `{"id", "type", "created", "data"}`; the version decides `data`:
- `2026-11-21` (legacy, flat): the event's catalog data as published.
- `2026-12-01` (seed 004's shape): the entity nested under its name (`data.email`,
  `data.campaign`, `data.contact`, `data.<entity>` for any other catalog type), its id as
  `id`, the moment as `<verb>_at`, and for opens and clicks `data.analytics` (`open_count`,
  `unique`, `device_type` from the user agent, `user_agent`, `ip`; no geo lookup).
Filters always look at the event's catalog data, so they work the same for both versions.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from ua_parser import parse as parse_user_agent

from libs.common.events import EVENT_TYPES, read_scope_of

LEGACY_VERSION = "2026-11-21"
LATEST_VERSION = "2026-12-01"
PAYLOAD_VERSIONS: tuple[str, ...] = (LEGACY_VERSION, LATEST_VERSION)
PayloadVersion = Literal["2026-11-21", "2026-12-01"]

# Fields that name the entity's id when it is not `<entity>_id`.
_ID_FIELDS = {
    "email": "message_id",
    "webhook": "endpoint_id",
    "analytics": "campaign_id",
    "goal": "conversion_id",
    "revenue": "conversion_id",
    "contact_import": "import_id",
}
# Engagement details of opens and clicks, moved out of the entity into `data.analytics`.
_ANALYTICS_FIELDS = ("open_count", "unique", "user_agent", "ip")
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS"})
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Chrome OS", "FreeBSD", "macOS"}
)
_TABLET_HINTS = ("ipad", "tablet", "kindle", "playbook", "nexus 7", "nexus 9", "nexus 10")


@functools.lru_cache(maxsize=4096)
def device_type(user_agent: str | None) -> str | None:
    """`mobile`, `tablet`, `desktop`, `proxy` (a mail provider fetching images on the reader's
    behalf, e.g. Gmail's image proxy: the device is unknown) or `other`; None without a UA."""
    if not user_agent:
        return None
    parsed = parse_user_agent(user_agent)
    agent = parsed.user_agent.family if parsed.user_agent else ""
    if "ImageProxy" in agent or "proxy" in user_agent.lower():
        return "proxy"
    os_family = parsed.os.family if parsed.os else ""
    device = parsed.device
    hint = " ".join(filter(None, (device.family, device.brand))).lower() if device else ""
    if any(h in hint for h in _TABLET_HINTS):
        return "tablet"
    if os_family in _MOBILE_OS:
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


def entity_of(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def nested_data(event_type: str, data: Mapping[str, Any], created: datetime) -> dict[str, Any]:
    """`data` of a `2026-12-01` payload, for any catalog type."""
    entity = entity_of(event_type)
    verb = event_type.split(".", 1)[1] if "." in event_type else "occurred"
    fields = dict(data)
    id_field = _ID_FIELDS.get(entity, f"{entity}_id")
    body: dict[str, Any] = {"id": fields.pop(id_field)} if id_field in fields else {}
    occurred = fields.pop("occurred_at", None)
    out: dict[str, Any] = {}
    if event_type in ("email.opened", "email.clicked"):
        analytics = {k: fields.pop(k) for k in _ANALYTICS_FIELDS if k in fields}
        analytics["device_type"] = device_type(analytics.get("user_agent"))
        out["analytics"] = analytics
    if entity == "contact" and "contact_tags" in fields:
        fields["tags"] = fields.pop("contact_tags")
    fields.pop("mode", None)  # the endpoint's mode already says it
    body.update(fields)
    body[f"{verb}_at"] = occurred if occurred is not None else _stamp(created)
    return {entity: body, **out}


def payload_data(
    version: str, event_type: str, data: Mapping[str, Any], created: datetime
) -> Mapping[str, Any]:
    if version == LEGACY_VERSION:
        return data
    return nested_data(event_type, data, created)


def webhook_body(
    msg_id: str,
    event_type: str,
    created: datetime,
    data: Mapping[str, Any],
    version: str = LEGACY_VERSION,
) -> str:
    """The payload: `{"id", "type", "created", "data"}` with `data` as `version` shapes it."""
    payload = {
        "id": msg_id,
        "type": event_type,
        "created": _stamp(created),
        "data": payload_data(version, event_type, data, created),
    }
    return orjson.dumps(payload).decode()


class EventBodies:
    """The webhook bodies of one event for its endpoints, byte for byte `webhook_body`'s: the
    costly part (`type`, `created` and `data` shaped and serialised) is built once per payload
    version; only the delivery id differs per endpoint."""

    def __init__(self, event_type: str, created: datetime, data: Mapping[str, Any]) -> None:
        self.event_type = event_type
        self.created = created
        self.data = data
        self._tails: dict[str, str] = {}

    def body(self, msg_id: str, version: str = LEGACY_VERSION) -> str:
        tail = self._tails.get(version)
        if tail is None:
            rest = {
                "type": self.event_type,
                "created": _stamp(self.created),
                "data": payload_data(version, self.event_type, self.data, self.created),
            }
            tail = self._tails[version] = orjson.dumps(rest).decode()[1:]  # without its `{`
        return '{"id":' + orjson.dumps(msg_id).decode() + "," + tail


# ------------------------------------------------------------------ the catalog

CATALOG_SAMPLE_TIME = datetime(2026, 12, 1, 9, 15, 30, tzinfo=UTC)


def deliverable_types() -> tuple[str, ...]:
    """Public catalog types with a read scope: what webhooks and the stream may carry."""
    return tuple(t for t in EVENT_TYPES if read_scope_of(t) is not None)


def sample_data(event_type: str) -> dict[str, Any]:
    """The catalog's sample data of a type (flat, as published)."""
    return EVENT_TYPES[event_type].example_data()


def catalog() -> list[dict[str, Any]]:
    """`GET /api/v1/events/types`: every deliverable type with its summary, the scope that may
    read it and a sample payload of the newest version."""
    entries = []
    for event_type in sorted(deliverable_types()):
        cls = EVENT_TYPES[event_type]
        sample = orjson.loads(
            webhook_body(
                "msg_sample",
                event_type,
                CATALOG_SAMPLE_TIME,
                sample_data(event_type),
                LATEST_VERSION,
            )
        )
        entries.append(
            {
                "type": event_type,
                "description": cls.summary or (cls.__doc__ or "").strip().split("\n")[0],
                "scope": cls.read_scope,
                "payload_version": LATEST_VERSION,
                "sample": sample,
            }
        )
    return entries
