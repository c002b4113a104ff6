"""Domain logic of the campaigns service: contacts (CRUD, lists, bulk import), templates and
previews, campaigns and their status machine, and the analytics read models' answers.

No SQL here (see repository.py) and no HTTP objects (see api.py): functions take the pool,
the owner (tenant, mode) and validated input, and raise `ApiError`s the API turns into
envelopes. Every change that is a fact (contact.*, campaign.*) is written to the outbox in
the change's transaction.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from pydantic import ValidationError as PydanticValidationError

from libs.common import outbox
from libs.common.events import (
    CampaignCancelled,
    CampaignCreated,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignUpdated,
    ContactCreated,
    ContactDeleted,
    ContactImportCompleted,
    ContactImportRequested,
    ContactUpdated,
    EventData,
    GoalConverted,
    RevenueRecorded,
    make_event,
    new_event_id,
    stamp_events,
    uuid7_text,
)
from libs.common.gc_pause import gc_paused
from libs.common.http import (
    ApiError,
    BadRequest,
    Conflict,
    ErrorDetail,
    NotFound,
    Pagination,
    ValidationFailed,
    register_error_code,
)
from libs.common.pagination import ListParams, Page
from libs.common.statistics import analyze_grown
from libs.common.templating import LIMIT_ERROR_CODE, LIMIT_ERROR_MEANING
from libs.common.tenancy import TenantScope
from services.campaigns import repository as repo
from services.campaigns.repository import (
    CampaignFilter,
    ContactFilter,
    ImportRow,
    TemplateFilter,
)
from services.campaigns.schemas import (
    CampaignCreate,
    CampaignUpdate,
    ContactCreate,
    ContactUpdate,
    ConversionCreate,
    PreviewRequest,
    TemplateCreate,
    TemplateUpdate,
    check_email,
    check_name,
    check_tags,
    custom_fields_json,
)
from services.campaigns.templating import CompiledContent, TemplateProblem, check, contact_context

SOURCE = "/services/campaigns"

register_error_code("contact_exists", 409, "A contact with this email already exists.")
register_error_code(
    "invalid_status_transition", 409, "The campaign's current status does not allow this action."
)
register_error_code(
    "campaign_not_editable", 409, "Only a draft campaign can be changed or deleted."
)
register_error_code("no_recipients", 422, "The campaign has no active recipient to send to.")
register_error_code("template_syntax_error", 422, "The template does not compile.")
register_error_code(
    "template_unsafe", 422, "The template reaches outside the sandbox (internals, files)."
)
register_error_code("template_render_error", 422, "The template failed to render.")
register_error_code(LIMIT_ERROR_CODE, 422, LIMIT_ERROR_MEANING)
register_error_code(
    "template_key_exists", 409, "Another template of this tenant already has this key."
)
# The same code and meaning as delivery's accept-time rule (a code means one thing everywhere).
register_error_code(
    "sender_domain_not_verified",
    422,
    "Live mail may only be sent From a domain verified for the account (POST /api/v1/domains).",
)
register_error_code(
    "campaign_sender_required",
    409,
    "A live campaign without from_email cannot start before the tenant sets a default sender.",
)

# The sender of a test-mode campaign with neither from_email nor a default sender (the same
# sandbox sender as delivery's; test mode never leaves the sandbox).
SANDBOX_FROM_EMAIL = "sandbox@sandbox.penguinmails.com"
SANDBOX_FROM_NAME = "PenguinMails Sandbox"


def _template_error(problem: TemplateProblem, field_prefix: str = "") -> ApiError:
    code = {
        "syntax": "template_syntax_error",
        "unsafe": "template_unsafe",
        "render": "template_render_error",
        "limit": LIMIT_ERROR_CODE,
    }[problem.kind]
    field = f"{field_prefix}{problem.part}"
    if problem.variable:
        field = f"variables.{problem.variable}"
    return ApiError(
        problem.message, code=code, details=[ErrorDetail(field=field, message=problem.message)]
    )


def _event(owner: TenantScope, data: EventData, subject: str) -> Any:
    return make_event(
        data, tenant_id=owner.tenant_id, source=SOURCE, subject=subject, mode=owner.mode
    )


# ---------------------------------------------------------------- contacts


def contact_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "company": row["company"],
        "tags": list(row["tags"]),
        "custom_fields": row["custom_fields"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _contact_event(row: Any, cls: type[EventData], **extra: Any) -> EventData:
    return cls(
        contact_id=str(row["id"]), email=row["email"], contact_tags=list(row["tags"]), **extra
    )


def _email_taken(email: str) -> Conflict:
    return Conflict(
        f"A contact with email {email} already exists.",
        code="contact_exists",
        details=[ErrorDetail(field="body.email", message="already used by another contact")],
    )


async def create_contact(
    pool: asyncpg.Pool, owner: TenantScope, body: ContactCreate
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.insert_contact(conn, owner, new_event_id(), body.model_dump())
        if row is None:
            raise _email_taken(body.email)
        await outbox.enqueue(
            conn,
            _event(owner, _contact_event(row, ContactCreated), f"contacts/{row['id']}"),
        )
    return contact_out(row)


async def get_contact(pool: asyncpg.Pool, owner: TenantScope, contact_id: UUID) -> dict[str, Any]:
    row = await repo.get_contact(pool, owner, contact_id)
    if row is None:
        raise NotFound("Contact not found.")
    return contact_out(row)


async def update_contact(
    pool: asyncpg.Pool, owner: TenantScope, contact_id: UUID, body: ContactUpdate
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    for key in ("email", "tags", "custom_fields", "status"):
        if key in changes and changes[key] is None:
            raise ValidationFailed(
                details=[ErrorDetail(field=f"body.{key}", message="may not be null")]
            )
    async with pool.acquire() as conn, conn.transaction():
        before = await repo.get_contact(conn, owner, contact_id, lock=True)
        if before is None:
            raise NotFound("Contact not found.")
        try:
            row = await repo.update_contact(conn, owner, contact_id, changes)
        except asyncpg.UniqueViolationError:
            raise _email_taken(changes["email"]) from None
        assert row is not None
        changed = sorted(k for k in changes if before[k] != row[k])
        if changed:
            await outbox.enqueue(
                conn,
                _event(
                    owner,
                    _contact_event(row, ContactUpdated, changed=changed),
                    f"contacts/{row['id']}",
                ),
            )
    return contact_out(row)


async def delete_contact(
    pool: asyncpg.Pool, owner: TenantScope, contact_id: UUID
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.delete_contact(conn, owner, contact_id)
        if row is None:
            raise NotFound("Contact not found.")
        await outbox.enqueue(
            conn, _event(owner, _contact_event(row, ContactDeleted), f"contacts/{row['id']}")
        )
    return {"id": row["id"], "deleted": True}


# What parse_custom_field_filters takes, as the spec states it: a key (no colon), a colon, a
# value (anything, even empty).
CUSTOM_FIELD_FILTER = r"^[^:]+:"


def parse_custom_field_filters(raw: list[str]) -> list[tuple[str, list[Any]]]:
    """`key:value` pairs; the value also matches as a JSON number/boolean (`seats:5`)."""
    out: list[tuple[str, list[Any]]] = []
    for i, item in enumerate(raw):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ValidationFailed(
                details=[
                    ErrorDetail(
                        field=f"query.custom_field.{i}", message="expected key:value, e.g. plan:pro"
                    )
                ]
            )
        values: list[Any] = [value]
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(value)
            if isinstance(parsed, bool | int | float) or parsed is None:
                values.append(parsed)
        out.append((key, values))
    return out


async def list_contacts(
    pool: asyncpg.Pool,
    owner: TenantScope,
    flt: ContactFilter,
    params: ListParams,
    *,
    include_total: bool = False,
) -> Page[dict[str, Any]]:
    rows = await repo.list_contacts(pool, owner, flt, params)
    total = await repo.count_contacts(pool, owner, flt) if include_total else None
    return params.page(rows, contact_out, sort_value=_sort_value, total=total)


def _sort_value(row: asyncpg.Record) -> Any:
    return row["sort_value"]


# ---------------------------------------------------------------- contact import

_CSV_FIELDS = ("email", "first_name", "last_name", "company", "tags", "status")
_STATUSES = ("active", "unsubscribed", "bounced", "complained")


class ImportTooLarge(ApiError):
    code = "payload_too_large"


def parse_import_json(body: bytes) -> list[Any]:
    """A JSON array of contacts, or `{"contacts": [...]}`."""
    try:
        with gc_paused():  # 50,000 rows' containers: see libs.common.gc_pause
            data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            code="invalid_json", details=[ErrorDetail(field="body", message=str(exc))]
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("contacts"), list):
        data = data["contacts"]
    if not isinstance(data, list):
        raise ValidationFailed(
            "Send a JSON array of contacts (or an object with a `contacts` array).",
            details=[ErrorDetail(field="body", message="expected an array of contacts")],
        )
    # A row that is not an object is a malformed request (the spec's `items: object`), not bad
    # data to report row by row: found by the contract fuzz (`[true, false]` was accepted).
    wrong = [i for i, item in enumerate(data) if not isinstance(item, dict)]
    if wrong:
        raise ValidationFailed(
            "Each contact is a JSON object.",
            details=[
                ErrorDetail(field=f"body.{i}", message="expected an object") for i in wrong[:20]
            ],
        )
    return data


# What parse_import_csv needs, as the spec states it: a header line (no quotes before it)
# with an `email` column.
CSV_HEADER_PATTERN = r"^([^\r\n\"]*,)?[ \t]*email[ \t]*(,|\r|\n|$)"


def parse_import_csv(body: bytes) -> list[Any]:
    """CSV with a header row: email, first_name, last_name, company, tags (`;`-separated),
    status; any other column becomes a custom field. Empty cells are absent values."""
    with gc_paused():
        return _parse_import_csv(body)


def _parse_import_csv(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            "The CSV file is not UTF-8.", details=[ErrorDetail(field="body", message=str(exc))]
        ) from exc
    # newline="" as the csv module asks: CR-only line ends (classic Mac, some Excel
    # exports) and quoted line breaks parse; they were "malformed" (found by the fuzz).
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        names = [h.strip() for h in header or []]
        if "email" not in names or not re.match(CSV_HEADER_PATTERN, text):
            raise ValidationFailed(
                "The CSV header has no `email` column.",
                details=[ErrorDetail(field="body", message="missing email column")],
            )
        rows: list[Any] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                rows.append(None)  # keeps row numbers aligned; reported as an empty row
                continue
            row: dict[str, Any] = {}
            custom: dict[str, Any] = {}
            if len(cells) > len(names):
                row["__error__"] = f"{len(cells)} cells for {len(names)} columns"
            for name, cell in zip(names, cells, strict=False):
                cell = cell.strip()
                if not cell:
                    continue
                if name == "tags":
                    row["tags"] = [t for t in (p.strip() for p in cell.split(";")) if t]
                elif name in _CSV_FIELDS:
                    row[name] = cell
                elif name:
                    custom[name] = cell
            if custom:
                row["custom_fields"] = custom
            rows.append(row)
        return rows
    except csv.Error as exc:
        raise BadRequest(
            "The CSV file is malformed.",
            details=[ErrorDetail(field="body", message=f"line {reader.line_num}: {exc}")],
        ) from exc


_IMPORT_FIELDS = frozenset({*_CSV_FIELDS, "custom_fields"})


def _import_row(item: Any) -> tuple[ImportRow | None, str | None, str]:
    """(row, field, message): a valid row, or the first problem with it. The API's rules
    (schemas.check_*), with custom fields serialised once: the size check's JSON is what
    COPY sends."""
    if not isinstance(item, dict):
        return None, None, "row is not an object" if item is not None else "row is empty"
    if not _IMPORT_FIELDS.issuperset(item):
        if "__error__" in item:
            return None, None, item["__error__"]
        return None, sorted(set(item) - _IMPORT_FIELDS)[0], "unknown field"
    field = "email"
    try:
        email = check_email(item.get("email"))
        field = "tags"
        tags = check_tags(item.get("tags"))
        field = "custom_fields"
        custom = custom_fields_json(item.get("custom_fields"))
        field = "first_name"
        first_name = check_name(item.get("first_name"), field)
        field = "last_name"
        last_name = check_name(item.get("last_name"), field)
        field = "company"
        company = check_name(item.get("company"), field)
        field = "status"
        status = item.get("status")
        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}")
    except ValueError as exc:
        return None, field, str(exc)
    row = ImportRow(
        uuid7_text(),
        email,
        first_name,
        last_name,
        company,
        tags,
        orjson.Fragment(custom),
        status,
    )
    return row, None, ""


class _ImportBatch:
    """One import's rows as they are checked: the valid rows, split into addresses the tenant
    does not have (`fresh`, COPYed) and those it has (`known`, merged), and the error rows."""

    def __init__(self, items: list[Any], taken: set[str]) -> None:
        self.items = items
        self.taken = taken
        self.errors: list[dict[str, Any]] = []
        self.fresh: list[ImportRow] = []
        self.known: list[ImportRow] = []
        self._first_row_of: dict[str, int] = {}

    def _check(self, number: int, item: Any) -> None:
        row, field, message = _import_row(item)
        if row is None:
            email = item.get("email") if isinstance(item, dict) else None
            self.errors.append(
                {
                    "row": number,
                    "email": email if isinstance(email, str) else None,
                    "field": field,
                    "message": message,
                }
            )
            return
        key = row.email.lower()
        first = self._first_row_of.setdefault(key, number)
        if first != number:
            self.errors.append(
                {
                    "row": number,
                    "email": row.email,
                    "field": "email",
                    "message": f"duplicate of row {first} in this import",
                }
            )
        elif row.email in self.taken:
            self.known.append(row)
        else:
            self.fresh.append(row)

    async def fresh_rows(self) -> AsyncIterator[ImportRow]:
        """Check every row, yielding the fresh ones as they come: the COPY streams them to
        the server while the rest are still being checked."""
        for number, item in enumerate(self.items, start=1):
            before = len(self.fresh)
            self._check(number, item)
            if len(self.fresh) > before:
                yield self.fresh[-1]

    def check_all(self) -> None:
        for number, item in enumerate(self.items, start=1):
            self._check(number, item)


# How many of an import's first addresses are looked up before it COPYs optimistically.
IMPORT_PROBE_ROWS = 200
# The tables an import grows, ANALYZEd once committed when they outgrew their statistics
# (libs.common.statistics): the contact lists' and the relay's plans follow their size.
IMPORT_TABLES = ("contacts", "outbox")


def _raw_emails(items: list[Any]) -> list[str]:
    """The addresses as sent (trimmed), before any check: enough to look up which exist."""
    out = []
    for item in items:
        email = item.get("email") if isinstance(item, dict) else None
        if isinstance(email, str):
            out.append(email.strip())
    return out


def _import_events(
    owner: TenantScope, fresh: list[ImportRow], merged: list[asyncpg.Record]
) -> Iterator[dict[str, Any]]:
    """One contact.created per new row, then one contact.updated (`changed: ["import"]`) per
    existing one, stamped from two templates (`stamp_events`): a pydantic model per row would
    cost more than the row's COPY. Generators: the outbox COPY streams them as made."""

    def item(contact_id: Any, email: str, tags: Any) -> tuple[str, dict[str, Any]]:
        data = {"contact_id": str(contact_id), "email": email, "contact_tags": list(tags)}
        return f"contacts/{contact_id}", data

    created = _event(owner, ContactCreated(contact_id="-", email="-"), "-")
    updated = _event(owner, ContactUpdated(contact_id="-", email="-", changed=["import"]), "-")
    return itertools.chain(
        stamp_events(
            created,
            itertools.chain(
                (item(r.id, r.email, r.tags) for r in fresh),
                (item(m["id"], m["email"], m["tags"]) for m in merged if m["inserted"]),
            ),
        ),
        stamp_events(
            updated, (item(m["id"], m["email"], m["tags"]) for m in merged if not m["inserted"])
        ),
    )


async def import_contacts(
    pool: asyncpg.Pool, owner: TenantScope, items: list[Any], max_rows: int
) -> dict[str, Any]:
    """Upsert every valid row in one transaction; every other row is in `errors` with its
    1-based row number. Publishes contact.created / contact.updated per imported row.

    Fast path: COPY the new contacts straight into the table while their rows are still
    being checked (all rows at once when a probe of the first addresses finds none taken,
    else after looking every address up); only existing ones take the slower merge
    (staging table, INSERT ... ON CONFLICT)."""
    if len(items) > max_rows:
        raise ImportTooLarge(
            f"An import takes at most {max_rows} rows; this one has {len(items)}. Split it.",
            details=[ErrorDetail(field="body", message=f"{len(items)} rows > {max_rows}")],
        )
    async with pool.acquire() as conn, conn.transaction():
        with gc_paused():
            report = await import_rows(conn, owner, items)
    await analyze_grown(pool, IMPORT_TABLES)
    return report


async def import_rows(
    conn: asyncpg.Connection, owner: TenantScope, items: list[Any]
) -> dict[str, Any]:
    """`import_contacts`' work inside the caller's transaction (the import job commits each
    chunk with its progress). Row numbers in `errors` are 1-based within `items`."""
    batch: _ImportBatch | None = None
    # Most imports bring new addresses: when none of the first IMPORT_PROBE_ROWS exists, COPY
    # every row at once and look the addresses up only if the COPY meets one (its savepoint
    # undoes it). The full look-up cost a quarter of the COPY's own time (bench/campaigns.py).
    probe = _raw_emails(items[:IMPORT_PROBE_ROWS])
    if not probe or not await repo.existing_contact_emails(conn, owner, probe):
        batch = _ImportBatch(items, set())
        if not await repo.copy_new_contacts(conn, owner, batch.fresh_rows()):
            batch = None
    if batch is None:
        taken = await repo.existing_contact_emails(conn, owner, _raw_emails(items))
        batch = _ImportBatch(items, taken)
        if not await repo.copy_new_contacts(conn, owner, batch.fresh_rows()):
            # An address was taken since the look-up (a concurrent write, or a spelling the
            # look-up could not match): merge every row instead.
            batch = _ImportBatch(items, set())
            batch.check_all()
            batch.known, batch.fresh = batch.fresh, []
    merged = await repo.upsert_contacts(conn, owner, batch.known) if batch.known else []
    await outbox.enqueue_copy(conn, _import_events(owner, batch.fresh, merged))
    inserted = sum(1 for m in merged if m["inserted"])
    return {
        "received": len(items),
        "created": len(batch.fresh) + inserted,
        "updated": len(merged) - inserted,
        "failed": len(batch.errors),
        "errors": batch.errors,
    }


# ---------------------------------------------------------------- templates


def template_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "id",
            "name",
            "key",
            "subject",
            "html",
            "text",
            "variables",
            "created_at",
            "updated_at",
        )
    }


def _check_template_parts(parts: dict[str, str | None], prefix: str = "body.") -> None:
    for part in ("subject", "html", "text"):
        source = parts.get(part)
        if source is None:
            continue
        try:
            check(part, source)
        except TemplateProblem as problem:
            raise _template_error(problem, prefix) from problem


async def create_template(
    pool: asyncpg.Pool, owner: TenantScope, body: TemplateCreate
) -> dict[str, Any]:
    _check_template_parts(body.model_dump())
    try:
        row = await repo.insert_template(pool, owner, new_event_id(), body.model_dump())
    except asyncpg.UniqueViolationError:
        raise _key_taken(body.key) from None
    return template_out(row)


def _key_taken(key: str | None) -> Conflict:
    return Conflict(
        f"Another template already has the key {key!r}.",
        code="template_key_exists",
        details=[ErrorDetail(field="body.key", message="already used by another template")],
    )


async def get_template(pool: asyncpg.Pool, owner: TenantScope, template_id: UUID) -> dict[str, Any]:
    row = await repo.get_template(pool, owner, template_id)
    if row is None:
        raise NotFound("Template not found.")
    return template_out(row)


async def update_template(
    pool: asyncpg.Pool, owner: TenantScope, template_id: UUID, body: TemplateUpdate
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    for key in ("name", "subject", "variables"):
        if key in changes and changes[key] is None:
            raise ValidationFailed(
                details=[ErrorDetail(field=f"body.{key}", message="may not be null")]
            )
    _check_template_parts(changes)
    try:
        row = await repo.update_template(pool, owner, template_id, changes)
    except asyncpg.UniqueViolationError:
        raise _key_taken(changes.get("key")) from None
    if row is None:
        raise NotFound("Template not found.")
    if not row["html"] and not row["text"]:
        # Put back: a template keeps a body. (Rare; cheaper than locking for every update.)
        raise ValidationFailed(
            "A template needs html or text.",
            details=[ErrorDetail(field="body", message="html and text cannot both be empty")],
        )
    return template_out(row)


async def delete_template(
    pool: asyncpg.Pool, owner: TenantScope, template_id: UUID
) -> dict[str, Any]:
    if not await repo.delete_template(pool, owner, template_id):
        raise NotFound("Template not found.")
    return {"id": template_id, "deleted": True}


async def list_templates(
    pool: asyncpg.Pool, owner: TenantScope, flt: TemplateFilter, params: ListParams
) -> Page[dict[str, Any]]:
    rows = await repo.list_templates(pool, owner, flt, params)
    return params.page(rows, template_out, sort_value=_sort_value)


async def preview_template(
    pool: asyncpg.Pool, owner: TenantScope, template_id: UUID, body: PreviewRequest
) -> dict[str, Any]:
    template = await repo.get_template(pool, owner, template_id)
    if template is None:
        raise NotFound("Template not found.")
    if body.contact_id is not None:
        contact = await repo.get_contact(pool, owner, body.contact_id)
        if contact is None:
            raise NotFound("Contact not found.")
        context = contact_context(dict(contact), body.data)
    else:
        context = dict(body.data if body.data is not None else template["variables"])
    try:
        compiled = CompiledContent(template["subject"], template["html"], template["text"])
        content = await compiled.render(context)
    except TemplateProblem as problem:
        raise _template_error(problem) from problem
    return {"subject": content.subject, "html": content.html, "text": content.text}


# ---------------------------------------------------------------- campaigns

_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": ("draft",),
    "pause": ("running", "scheduled"),
    "resume": ("paused",),
    "cancel": ("draft", "scheduled", "running", "paused"),
}


def _content_dict(step: dict[str, Any]) -> dict[str, Any]:
    return {k: step.get(k) for k in ("html", "text", "template_id") if step.get(k) is not None}


def campaign_out(row: asyncpg.Record) -> dict[str, Any]:
    steps: list[dict[str, Any]] = row["steps"]
    spacing = (
        {"min_seconds": row["spacing_min_seconds"], "max_seconds": row["spacing_max_seconds"]}
        if row["spacing_max_seconds"]
        else None
    )
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "from_email": row["from_email"],
        "from_name": row["from_name"],
        "reply_to": row["reply_to"],
        "subject": steps[0].get("subject"),
        "content": _content_dict(steps[0]),
        "recipients": row["recipients"],
        "settings": row["settings"],
        "follow_ups": [
            {
                "delay_days": s["delay_days"],
                "subject": s.get("subject"),
                "content": _content_dict(s),
            }
            for s in steps[1:]
        ],
        "schedule": row["schedule"],
        "daily_cap": row["daily_cap"],
        "spacing": spacing,
        "scheduled_at": row["scheduled_at"],
        "recipient_count": row["recipient_count"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "sent_at": row["sent_at"],
    }


def _steps(subject: str | None, content: Any, follow_ups: list[Any]) -> list[dict[str, Any]]:
    steps = [{"step": 1, "delay_days": 0, "subject": subject, **content.model_dump(mode="json")}]
    for i, f in enumerate(follow_ups, start=2):
        steps.append(
            {
                "step": i,
                "delay_days": f.delay_days,
                "subject": f.subject,
                **f.content.model_dump(mode="json"),
            }
        )
    return steps


def _check_steps(steps: list[dict[str, Any]]) -> None:
    for i, step in enumerate(steps):
        prefix = "body.content." if i == 0 else f"body.follow_ups.{i - 1}.content."
        for part in ("html", "text"):
            if step.get(part) is not None:
                try:
                    check(part, step[part])
                except TemplateProblem as problem:
                    raise _template_error(problem, prefix) from problem
        if step.get("subject") is not None:
            try:
                check("subject", step["subject"])
            except TemplateProblem as problem:
                where = "body." if i == 0 else f"body.follow_ups.{i - 1}."
                raise _template_error(problem, where) from problem


async def _check_references(pool: asyncpg.Pool, owner: TenantScope, fields: dict[str, Any]) -> None:
    details: list[ErrorDetail] = []
    for i, step in enumerate(fields.get("steps") or []):
        if (
            step.get("template_id")
            and await repo.get_template_by_ref(pool, owner, step["template_id"]) is None
        ):
            where = "body.content" if i == 0 else f"body.follow_ups.{i - 1}.content"
            details.append(ErrorDetail(field=f"{where}.template_id", message="no such template"))
    ids = (fields.get("recipients") or {}).get("contact_ids")
    if ids:
        wanted = [UUID(x) for x in ids]
        found = await repo.existing_contact_ids(pool, owner, wanted)
        missing = [str(x) for x in wanted if x not in found]
        for x in missing[:20]:
            details.append(
                ErrorDetail(field="body.recipients.contact_ids", message=f"no such contact: {x}")
            )
    if details:
        raise ValidationFailed(details=details)


def _campaign_fields(body: CampaignCreate) -> dict[str, Any]:
    """Columns of a campaign from its validated input."""
    sp = body.spacing
    steps = _steps(body.subject, body.content, body.follow_ups)
    return {
        "name": body.name,
        "from_email": body.from_email,
        "from_name": body.from_name,
        "reply_to": body.reply_to,
        "steps": steps,
        "recipients": (
            {"contact_ids": []}  # inline recipients: filled in once their contacts exist
            if isinstance(body.recipients, list)
            else body.recipients.model_dump(mode="json", exclude_none=True)
        ),
        "settings": body.settings.model_dump(),
        "schedule": body.schedule.model_dump() if body.schedule else None,
        "daily_cap": body.daily_cap,
        "spacing_min_seconds": sp.min_seconds if sp else 0,
        "spacing_max_seconds": sp.max_seconds if sp else 0,
        "scheduled_at": body.scheduled_at,
    }


def _campaign_input(current: asyncpg.Record) -> dict[str, Any]:
    """A stored draft as the create body that would make it (to apply a PUT on top)."""
    out = campaign_out(current)
    keys = (
        "name",
        "from_email",
        "from_name",
        "reply_to",
        "subject",
        "content",
        "recipients",
        "settings",
        "follow_ups",
        "schedule",
        "daily_cap",
        "spacing",
        "scheduled_at",
    )
    body = {k: out[k] for k in keys}
    body["follow_ups"] = [{k: v for k, v in f.items() if v is not None} for f in body["follow_ups"]]
    return {k: v for k, v in body.items() if v is not None}


async def create_campaign(
    pool: asyncpg.Pool, owner: TenantScope, body: CampaignCreate
) -> dict[str, Any]:
    fields = _campaign_fields(body)
    _check_steps(fields["steps"])
    await _check_references(pool, owner, fields)
    campaign_id = new_event_id()
    async with pool.acquire() as conn, conn.transaction():
        if isinstance(body.recipients, list):
            await _inline_recipients(conn, owner, campaign_id, body.recipients, fields)
        row = await repo.insert_campaign(conn, owner, campaign_id, fields)
        if isinstance(body.recipients, list):
            await repo.replace_personalization(conn, campaign_id, fields.pop("_personalization"))
        await outbox.enqueue(conn, await _content_event(conn, row, CampaignCreated))
    return campaign_out(row)


async def _inline_recipients(
    conn: asyncpg.Connection,
    owner: TenantScope,
    campaign_id: UUID,
    recipients: list[Any],
    fields: dict[str, Any],
) -> None:
    """Seed 004's `recipients: [{email, personalization}]`: upsert the contacts (new ones are
    created with their address only and published as contact.created), then keep the
    campaign as a contact_ids campaign with per-contact personalization."""
    seen: dict[str, Any] = {}
    for r in recipients:
        seen.setdefault(r.email.lower(), r)
    ids, created = await repo.ensure_contacts(
        conn, owner, [(uuid7_text(), r.email) for r in seen.values()]
    )
    for c in created:
        await outbox.enqueue(
            conn, _event(owner, _contact_event(c, ContactCreated), f"contacts/{c['id']}")
        )
    fields["recipients"] = {"contact_ids": [str(ids[k]) for k in seen]}
    fields["_personalization"] = [
        (ids[k], r.personalization) for k, r in seen.items() if r.personalization
    ]


async def _content_event(conn: asyncpg.Connection, row: Any, cls: type[EventData]) -> Any:
    """campaign.created / campaign.updated with the first step's content as it would be sent
    (the template's parts, overridden by inline ones)."""
    owner = TenantScope(row["tenant_id"], row["mode"])
    step = dict(row["steps"][0])
    if step.get("template_id"):
        t = await repo.get_template_by_ref(conn, owner, step["template_id"])
        if t is not None:
            step["html"] = step.get("html") or t["html"]
            step["text"] = step.get("text") or t["text"]
            step["subject"] = step.get("subject") or t["subject"]
    settings = row["settings"]
    analytics = settings.get("analytics_enabled", True)
    return _campaign_event(
        row,
        cls,
        subject=step.get("subject"),
        html=step.get("html"),
        text=step.get("text"),
        template_id=step.get("template_id"),
        from_email=row["from_email"],
        from_name=row["from_name"],
        reply_to=row["reply_to"],
        category=settings.get("category", "marketing"),
        track_opens=analytics and settings.get("track_opens", True),
        track_clicks=analytics and settings.get("track_clicks", True),
    )


async def get_campaign(pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID) -> dict[str, Any]:
    row = await repo.get_campaign(pool, owner, campaign_id)
    if row is None:
        raise NotFound("Campaign not found.")
    return campaign_out(row)


def _status_conflict(code: str, action: str, status: str) -> Conflict:
    return Conflict(
        f"Cannot {action} a campaign whose status is '{status}'.",
        code=code,
        details=[ErrorDetail(field="status", message=status)],
    )


async def update_campaign(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID, body: CampaignUpdate
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        current = await repo.get_campaign(conn, owner, campaign_id, lock=True)
        if current is None:
            raise NotFound("Campaign not found.")
        if current["status"] != "draft":
            raise _status_conflict("campaign_not_editable", "change", current["status"])
        merged = {**_campaign_input(current), **body.model_dump(mode="json", exclude_unset=True)}
        try:
            full = CampaignCreate.model_validate(merged)
        except PydanticValidationError as exc:
            raise ValidationFailed(
                details=[
                    ErrorDetail(field=".".join(["body", *map(str, e["loc"])]), message=e["msg"])
                    for e in exc.errors()
                ]
            ) from exc
        fields = _campaign_fields(full)
        _check_steps(fields["steps"])
        await _check_references(pool, owner, fields)
        if isinstance(full.recipients, list):
            await _inline_recipients(conn, owner, campaign_id, full.recipients, fields)
            await repo.replace_personalization(conn, campaign_id, fields.pop("_personalization"))
        elif body.recipients is not None:
            await repo.replace_personalization(conn, campaign_id, [])
        row = await repo.update_campaign(conn, campaign_id, fields)
        await outbox.enqueue(conn, await _content_event(conn, row, CampaignUpdated))
    return campaign_out(row)


async def delete_campaign(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        current = await repo.get_campaign(conn, owner, campaign_id, lock=True)
        if current is None:
            raise NotFound("Campaign not found.")
        if current["status"] not in ("draft", "completed", "cancelled"):
            raise _status_conflict("campaign_not_editable", "delete", current["status"])
        await repo.delete_campaign(conn, campaign_id)
    return {"id": campaign_id, "deleted": True}


async def list_campaigns(
    pool: asyncpg.Pool, owner: TenantScope, flt: CampaignFilter, params: ListParams
) -> Page[dict[str, Any]]:
    rows = await repo.list_campaigns(pool, owner, flt, params)
    return params.page(rows, campaign_out, sort_value=_sort_value)


async def _resolve_steps(
    conn: asyncpg.Connection, owner: TenantScope, steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Freeze each step's content (templates copied in) and prove it compiles."""
    resolved: list[dict[str, Any]] = []
    first_subject: str | None = None
    for i, step in enumerate(steps):
        where = "body.content" if i == 0 else f"follow_ups.{i - 1}.content"
        s = dict(step)
        if s.get("template_id"):
            t = await repo.get_template_by_ref(conn, owner, s["template_id"])
            if t is None:
                raise ValidationFailed(
                    "A template used by the campaign no longer exists.",
                    details=[ErrorDetail(field=f"{where}.template_id", message="no such template")],
                )
            # Inline html/text given beside the template override that part.
            s["html"] = s.get("html") or t["html"]
            s["text"] = s.get("text") or t["text"]
            s["subject"] = s.get("subject") or t["subject"]
        if not s.get("subject"):
            s["subject"] = f"Re: {first_subject}"
        if i == 0:
            first_subject = s["subject"]
        try:
            CompiledContent(s["subject"], s.get("html"), s.get("text"))
        except TemplateProblem as problem:
            raise _template_error(problem, f"{where}.") from problem
        resolved.append(s)
    return resolved


def _campaign_event(row: Any, cls: type[EventData], **extra: Any) -> Any:
    owner = TenantScope(row["tenant_id"], row["mode"])
    return _event(
        owner, cls(campaign_id=str(row["id"]), name=row["name"], **extra), f"campaigns/{row['id']}"
    )


async def start_campaign(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID
) -> dict[str, Any]:
    """Freeze recipients and content; running now, or scheduled until `scheduled_at`."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        current = await repo.get_campaign(conn, owner, campaign_id, lock=True)
        if current is None:
            raise NotFound("Campaign not found.")
        if current["status"] not in _TRANSITIONS["start"]:
            raise _status_conflict("invalid_status_transition", "start", current["status"])
        steps = await _resolve_steps(conn, owner, current["steps"])
        sender = await _sender(conn, owner, current)
        await _require_verified_domain(
            conn, owner, sender.get("from_email") or current["from_email"]
        )
        begin = max(now, current["scheduled_at"] or now)
        spec = current["recipients"]
        frozen = await repo.freeze_recipients(
            conn,
            owner,
            campaign_id,
            contact_ids=[UUID(x) for x in spec["contact_ids"]] if "contact_ids" in spec else None,
            tags=spec.get("tags"),
            match_all=spec.get("match") == "all",
            due_at=begin,
        )
        if frozen == 0:
            raise ApiError(
                "No active contact matches the campaign's recipients.",
                code="no_recipients",
                details=[ErrorDetail(field="recipients", message="0 active contacts")],
            )
        status = "scheduled" if begin > now else "running"
        row = await repo.update_campaign(
            conn,
            campaign_id,
            {
                "status": status,
                "steps": steps,
                "recipient_count": frozen,
                "next_run_at": begin,
                "started_at": now if status == "running" else None,
                **sender,
            },
        )
        if status == "running":
            await outbox.enqueue(conn, _campaign_event(row, CampaignStarted, recipients=frozen))
    return campaign_out(row)


async def _require_verified_domain(
    conn: asyncpg.Connection, owner: TenantScope, sender: str
) -> None:
    """A live campaign sends only From a domain the tenant verified (or a subdomain of one),
    as known from delivery's domain.* events; test mode is exempt."""
    if owner.mode != "live":
        return
    domain = sender.rpartition("@")[2].lower()
    labels = domain.split(".")
    names = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    if not await repo.domain_verified(conn, owner.tenant_id, names):
        raise ApiError(
            f"{domain} is not a verified sending domain of this account; verify it with "
            "POST /api/v1/domains before starting a live campaign.",
            code="sender_domain_not_verified",
            details=[ErrorDetail(field="from_email", message=f"domain {domain} is not verified")],
        )


async def _sender(conn: asyncpg.Connection, owner: TenantScope, campaign: Any) -> dict[str, Any]:
    """The sender columns a campaign without from_email freezes at start: the tenant's default
    sender (read model of sending_settings.updated), else in test mode the sandbox sender."""
    if campaign["from_email"]:
        return {}
    defaults = await repo.sender_defaults(conn, owner)
    if defaults is not None and defaults["default_from"]:
        return {
            "from_email": defaults["default_from"],
            "from_name": campaign["from_name"] or defaults["default_from_name"],
            "reply_to": campaign["reply_to"] or defaults["default_reply_to"],
        }
    if owner.mode == "test":
        return {
            "from_email": SANDBOX_FROM_EMAIL,
            "from_name": campaign["from_name"] or SANDBOX_FROM_NAME,
        }
    raise Conflict(
        "This campaign has no from_email and the tenant has no default sender.",
        code="campaign_sender_required",
        details=[
            ErrorDetail(
                field="from_email",
                message="set from_email, or default_from with PUT /api/v1/sending/settings",
            )
        ],
    )


async def pause_campaign(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID
) -> dict[str, Any]:
    return await _transition(pool, owner, campaign_id, "pause", "paused", CampaignPaused)


async def resume_campaign(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID
) -> dict[str, Any]:
    return await _transition(pool, owner, campaign_id, "resume", None, CampaignResumed)


async def cancel_campaign(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID
) -> dict[str, Any]:
    return await _transition(pool, owner, campaign_id, "cancel", "cancelled", CampaignCancelled)


async def _transition(
    pool: asyncpg.Pool,
    owner: TenantScope,
    campaign_id: UUID,
    action: str,
    target: str | None,
    event: type[EventData],
) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        # The row lock waits for a runner batch in flight on this campaign: once this
        # commits, the runner claims nothing more for it.
        current = await repo.get_campaign(conn, owner, campaign_id, lock=True)
        if current is None:
            raise NotFound("Campaign not found.")
        if current["status"] not in _TRANSITIONS[action]:
            raise _status_conflict("invalid_status_transition", action, current["status"])
        changes: dict[str, Any] = {}
        if action == "resume":
            never_started = current["started_at"] is None
            scheduled = current["scheduled_at"]
            target = "scheduled" if never_started and scheduled and scheduled > now else "running"
            changes["next_run_at"] = scheduled if target == "scheduled" else now
        if action == "cancel":
            changes["completed_at"] = now
            await repo.stop_pending_recipients(conn, campaign_id, "cancelled")
        changes["status"] = target
        row = await repo.update_campaign(conn, campaign_id, changes)
        if current["status"] != "draft":
            await outbox.enqueue(conn, _campaign_event(row, event))
    return campaign_out(row)


# ---------------------------------------------------------------- analytics

METRICS = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "bounced",
    "complained",
    "unsubscribed",
    "failed",
)
_PERIOD = re.compile(r"([1-9][0-9]?)d")


def _metric(event_type: str) -> str | None:
    name = event_type.removeprefix("email.")
    return name if name in METRICS else None


def _rate(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def _rates(unique: dict[str, int]) -> dict[str, float]:
    delivered = unique["delivered"] or unique["sent"]
    return {
        "delivery_rate": _rate(unique["delivered"], unique["sent"]),
        "open_rate": _rate(unique["opened"], delivered),
        "click_rate": _rate(unique["clicked"], delivered),
        "click_to_open_rate": _rate(unique["clicked"], unique["opened"]),
        "reply_rate": _rate(unique["replied"], unique["sent"]),
        "bounce_rate": _rate(unique["bounced"], unique["sent"]),
        "unsubscribe_rate": _rate(unique["unsubscribed"], delivered),
        "complaint_rate": _rate(unique["complained"], delivered),
    }


def _fold(rows: list[asyncpg.Record]) -> dict[str, Any]:
    total = dict.fromkeys(METRICS, 0)
    unique = dict.fromkeys(METRICS, 0)
    for r in rows:
        m = _metric(r["event_type"])
        if m:
            total[m] += r["total"]
            unique[m] += r["uniq"]
    return {"total": total, "unique": unique, "rates": _rates(unique)}


def parse_period(period: str) -> int:
    found = _PERIOD.fullmatch(period)
    if not found or int(found.group(1)) > 90:
        raise ValidationFailed(
            "period must be 1d to 90d.",
            details=[ErrorDetail(field="query.period", message="expected <days>d, 1d..90d")],
        )
    return int(found.group(1))


async def email_analytics(pool: asyncpg.Pool, owner: TenantScope, period: str) -> dict[str, Any]:
    days = parse_period(period)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    totals = await repo.tenant_event_totals(pool, owner, since)
    daily = await repo.tenant_event_daily(pool, owner, since)
    series = {first + timedelta(days=i): dict.fromkeys(METRICS, 0) for i in range(days)}
    for r in daily:
        m = _metric(r["event_type"])
        if m and r["day"] in series:
            series[r["day"]][m] += r["uniq"]
    return {
        "period": period,
        "from": since,
        "to": datetime.now(UTC),
        **_fold(totals),
        "daily": [{"date": d.isoformat(), **counts} for d, counts in series.items()],
    }


async def campaign_analytics(
    pool: asyncpg.Pool, owner: TenantScope, campaign_id: UUID, period: str | None = None
) -> dict[str, Any]:
    """Lifetime counts, or the last `period` days' (`1d`..`90d`, today included, UTC)."""
    campaign = await repo.get_campaign(pool, owner, campaign_id)
    if campaign is None:
        raise NotFound("Campaign not found.")
    since: datetime | None = None
    if period is not None:
        first = datetime.now(UTC).date() - timedelta(days=parse_period(period) - 1)
        since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
        rows = await repo.campaign_event_counts_since(pool, owner.tenant_id, campaign_id, since)
    else:
        rows = await repo.campaign_event_counts(pool, owner.tenant_id, campaign_id)
    conversions = await repo.campaign_conversions(pool, owner.tenant_id, campaign_id, since)
    folded = _fold(rows)
    converted = sum(int(c["n"]) for c in conversions)
    by_step: dict[int, list[asyncpg.Record]] = {}
    for r in rows:
        if r["step"] is not None:
            by_step.setdefault(r["step"], []).append(r)
    return {
        "campaign_id": campaign_id,
        "status": campaign["status"],
        "requested": await repo.requested_count(pool, campaign_id),
        "recipients": {
            "total": campaign["recipient_count"],
            **{s: 0 for s in ("pending", "done", "replied", "stopped", "failed")},
            **await repo.recipient_states(pool, campaign_id),
        },
        **folded,
        "steps": [{"step": s, **_fold(by_step[s])} for s in sorted(by_step)],
        "period": period,
        "from": since,
        "to": datetime.now(UTC),
        "overview": {**folded["unique"], "conversions": converted},
        "conversions": converted,
        "revenue": [
            {
                "currency": c["currency"],
                "amount": float(c["amount"]),
                "conversions": int(c["n"]),
            }
            for c in conversions
            if c["currency"] is not None
        ],
    }


async def contact_analytics(
    pool: asyncpg.Pool, owner: TenantScope, contact_id: UUID, limit: int, cursor: str | None
) -> tuple[dict[str, Any], Pagination]:
    """Engagement of one contact: totals and a newest-first timeline (cursor pages)."""
    contact = await repo.get_contact(pool, owner, contact_id)
    if contact is None:
        raise NotFound("Contact not found.")
    params = ListParams(limit=limit, cursor=cursor, sort_by="occurred_at", order="desc")
    rows = await repo.contact_timeline(
        pool, owner.tenant_id, contact_id, limit=limit + 1, after=params.after()
    )
    page = params.page(
        rows,
        lambda r: {
            "event_id": r["event_id"],
            "type": r["event_type"],
            "occurred_at": r["occurred_at"],
            "message_id": r["message_id"],
            "campaign_id": r["campaign_id"],
            "step": r["step"],
            "detail": r["detail"],
        },
        sort_value=_sort_value,
    )
    counts = await repo.contact_event_counts(pool, owner.tenant_id, contact_id)
    summary = _fold(counts)
    last = max((r["last_at"] for r in counts), default=None)
    data = {
        "contact_id": contact_id,
        "email": contact["email"],
        "status": contact["status"],
        "total": summary["total"],
        "unique": summary["unique"],
        "last_activity_at": last,
        "timeline": page.items,
    }
    return data, page.pagination


# ---------------------------------------------------------------- conversions


async def record_conversion(
    pool: asyncpg.Pool, owner: TenantScope, body: ConversionCreate
) -> dict[str, Any]:
    """Record a goal once (same contact, goal and occurred_at: the stored one is returned),
    attributed to `campaign_id` or else to the last campaign that sent to the contact;
    publishes goal.converted and, with a value, revenue.recorded."""
    occurred = body.occurred_at or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        if body.contact_id is not None:
            contact = await repo.get_contact(conn, owner, body.contact_id)
            where = "body.contact_id"
        else:
            assert body.email is not None
            contact = await repo.contact_by_email(conn, owner, body.email)
            where = "body.email"
        if contact is None:
            raise NotFound(
                "Contact not found.", details=[ErrorDetail(field=where, message="no such contact")]
            )
        campaign_id = body.campaign_id
        if campaign_id is not None:
            if await repo.get_campaign(conn, owner, campaign_id) is None:
                raise NotFound(
                    "Campaign not found.",
                    details=[ErrorDetail(field="body.campaign_id", message="no such campaign")],
                )
        else:
            campaign_id = await repo.last_campaign_reaching(
                conn, owner.tenant_id, owner.mode, contact["id"], occurred
            )
        row, created = await repo.insert_conversion(
            conn,
            owner,
            {
                "id": new_event_id(),
                "contact_id": contact["id"],
                "goal": body.goal,
                "value": body.value,
                "currency": body.currency,
                "campaign_id": campaign_id,
                "occurred_at": occurred,
            },
        )
        if created:
            data = {
                "conversion_id": str(row["id"]),
                "contact_id": str(contact["id"]),
                "email": contact["email"],
                "goal": row["goal"],
                "value": float(row["value"]) if row["value"] is not None else None,
                "currency": row["currency"],
                "campaign_id": str(row["campaign_id"]) if row["campaign_id"] else None,
                "occurred_at": row["occurred_at"],
                "contact_tags": list(contact["tags"]),
            }
            subject = f"conversions/{row['id']}"
            await outbox.enqueue(conn, _event(owner, GoalConverted(**data), subject))
            if row["value"] is not None:
                await outbox.enqueue(conn, _event(owner, RevenueRecorded(**data), subject))
    out = dict(row)
    out["value"] = float(row["value"]) if row["value"] is not None else None
    out["created"] = created
    return out


# ---------------------------------------------------------------- import jobs

IMPORT_CHUNK_ROWS = 5_000


def import_job_out(row: Any) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "id",
            "status",
            "total",
            "processed",
            "created",
            "updated",
            "failed",
            "errors",
            "created_at",
            "completed_at",
        )
    }


async def submit_import(
    pool: asyncpg.Pool, owner: TenantScope, items: list[Any], max_rows: int
) -> dict[str, Any]:
    """Accept an import job: the parsed rows are stored and a work item queued for the
    worker (contact_import.requested) in one transaction."""
    if len(items) > max_rows:
        raise ImportTooLarge(
            f"An import takes at most {max_rows} rows; this one has {len(items)}. Split it.",
            details=[ErrorDetail(field="body", message=f"{len(items)} rows > {max_rows}")],
        )
    import_id = new_event_id()
    async with pool.acquire() as conn, conn.transaction():
        with gc_paused():
            chunks = [
                (first, orjson.dumps(items[first : first + IMPORT_CHUNK_ROWS]))
                for first in range(0, len(items), IMPORT_CHUNK_ROWS)
            ]
        row = await repo.insert_import(conn, owner, import_id, chunks, len(items))
        await outbox.enqueue(
            conn,
            _event(
                owner,
                ContactImportRequested(import_id=str(import_id)),
                f"contacts/imports/{import_id}",
            ),
        )
    return import_job_out(row)


async def get_import(pool: asyncpg.Pool, owner: TenantScope, import_id: UUID) -> dict[str, Any]:
    row = await repo.get_import(pool, owner, import_id)
    if row is None:
        raise NotFound("Import not found.")
    return import_job_out(row)


async def run_import(
    pool: asyncpg.Pool, import_id: UUID, chunk_rows: int = IMPORT_CHUNK_ROWS
) -> bool:
    """Import a job's rows chunk by chunk (each chunk and its progress in one transaction, so
    a restarted job resumes where it stopped); then contact_import.completed. False when the
    job is not this worker's to run (done, or running elsewhere)."""
    async with pool.acquire() as conn:
        job = await repo.claim_import(conn, import_id)
    if job is None:
        return False
    owner = TenantScope(job["tenant_id"], job["mode"])
    done = job["processed"]
    while done < job["total"]:
        async with pool.acquire() as conn, conn.transaction():
            with gc_paused():
                items = await repo.import_chunk(conn, import_id, done, chunk_rows)
                if not items:
                    break  # nothing stored past `done` (a total the rows never reached)
                report = await import_rows(conn, owner, items)
            for e in report["errors"]:
                e["row"] += done  # 1-based within the whole import
            done += len(items)
            await repo.advance_import(conn, import_id, done, report)
        # The chunk's rows are in: plans of the tables it grew (the contact lists, the
        # relay's claims) follow their size instead of waiting for autovacuum.
        await analyze_grown(pool, IMPORT_TABLES)
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.complete_import(conn, import_id)
        await outbox.enqueue(
            conn,
            _event(
                owner,
                ContactImportCompleted(
                    import_id=str(import_id),
                    total=row["total"],
                    created=row["created"],
                    updated=row["updated"],
                    failed=row["failed"],
                ),
                f"contacts/imports/{import_id}",
            ),
        )
    return True
