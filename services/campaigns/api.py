"""HTTP API of the campaigns service: contacts, templates, campaigns with sequences and schedules,
and analytics read models. Thin: parse, check the principal's scope (`auth.py`), call
service.py, wrap the result in the envelope. The router is declared at module level; settings
come from the app (`app.state.settings`).
"""

from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from pydantic import StringConstraints

from libs.common.app import app_settings, create_app
from libs.common.http import (
    ApiError,
    Deleted,
    ErrorDetail,
    ErrorEnvelope,
    NotFound,
    SuccessEnvelope,
    ok,
)
from libs.common.pagination import (
    MAX_CURSOR_CHARS,
    ListParams,
    list_params,
    reject_unknown_query,
)
from libs.common.principal import Principal
from libs.common.resources import Resources, resources_of
from libs.common.tenancy import TenantScope
from libs.common.timestamps import Timestamp
from services.campaigns import service
from services.campaigns.auth import (
    analytics_scope,
    campaigns_scope,
    contacts_scope,
    templates_scope,
)
from services.campaigns.repository import CampaignFilter, ContactFilter, TemplateFilter
from services.campaigns.schemas import (
    Campaign,
    CampaignAnalytics,
    CampaignCreate,
    CampaignStatus,
    CampaignUpdate,
    Contact,
    ContactAnalytics,
    ContactCreate,
    ContactStatus,
    ContactUpdate,
    Conversion,
    ConversionCreate,
    EmailAnalytics,
    ImportJob,
    ImportReport,
    Preview,
    PreviewRequest,
    Template,
    TemplateCreate,
    TemplateUpdate,
)
from services.campaigns.settings import CampaignsSettings

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 409, 422)
}
MAX_LIMIT = 500
# The days `service.parse_period` accepts, stated in the spec: 1d..90d, no leading zero.
PERIOD_PATTERN = r"^([1-9]|[1-8][0-9]|90)d$"


def _pool(request: Request) -> asyncpg.Pool:
    return resources_of(request.app).pool


def _id(raw: str, what: str) -> UUID:
    # A malformed id names no resource: same answer as an unknown one.
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"{what} not found.") from None


def _owner(p: Principal) -> TenantScope:
    return TenantScope.of(p)


Pool = Annotated[asyncpg.Pool, Depends(_pool)]
Settings = Annotated[CampaignsSettings, Depends(app_settings)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1-500).")]
ContactParams = Annotated[
    ListParams,
    Depends(list_params(("created_at", "updated_at", "email"), max_limit=MAX_LIMIT)),
]
CreatedParams = Annotated[ListParams, Depends(list_params(("created_at",), max_limit=MAX_LIMIT))]


def _transition_route(handler: Any, scope: Any) -> Any:
    async def route(campaign_id: str, p: scope, pool: Pool) -> dict[str, Any]:
        return ok(await handler(pool, _owner(p), _id(campaign_id, "Campaign")))

    return route


router = APIRouter(prefix="/api/v1", responses=ERRORS, dependencies=[Depends(reject_unknown_query)])

# ------------------------------------------------------------ contacts


@router.get("/contacts", response_model=SuccessEnvelope[list[Contact]], tags=["contacts"])
async def list_contacts(
    p: contacts_scope,
    pool: Pool,
    params: ContactParams,
    email: Annotated[str | None, Query(description="Exact address, any case.")] = None,
    tag: Annotated[list[str] | None, Query(description="Has every given tag.")] = None,
    status: ContactStatus | None = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
    custom_field: Annotated[
        list[Annotated[str, StringConstraints(pattern=service.CUSTOM_FIELD_FILTER)]] | None,
        Query(description="`key:value` equality, repeatable."),
    ] = None,
    include_total: bool = False,
) -> dict[str, Any]:
    flt = ContactFilter(
        email=email,
        tags=tag,
        status=status,
        created_after=created_after,
        created_before=created_before,
        custom_fields=service.parse_custom_field_filters(custom_field or []),
    )
    page = await service.list_contacts(pool, _owner(p), flt, params, include_total=include_total)
    return page.envelope()


@router.post(
    "/contacts",
    status_code=201,
    response_model=SuccessEnvelope[Contact],
    tags=["contacts"],
)
async def create_contact(p: contacts_scope, pool: Pool, body: ContactCreate) -> dict[str, Any]:
    return ok(await service.create_contact(pool, _owner(p), body))


@router.post(
    "/contacts/import",
    response_model=SuccessEnvelope[ImportReport],
    tags=["contacts"],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "text/csv": {"schema": {"type": "string", "pattern": service.CSV_HEADER_PATTERN}},
            },
            "required": True,
        }
    },
)
async def import_contacts(
    request: Request, p: contacts_scope, pool: Pool, settings: Settings
) -> dict[str, Any]:
    """Upsert up to 50,000 contacts (JSON array or CSV); bad rows are reported, not
    dropped."""
    items = await _import_items(request, settings)
    return ok(await service.import_contacts(pool, _owner(p), items, settings.import_max_rows))


@router.post(
    "/contacts/imports",
    status_code=202,
    response_model=SuccessEnvelope[ImportJob],
    tags=["contacts"],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "text/csv": {"schema": {"type": "string", "pattern": service.CSV_HEADER_PATTERN}},
            },
            "required": True,
        }
    },
)
async def submit_import(
    request: Request, p: contacts_scope, pool: Pool, settings: Settings
) -> dict[str, Any]:
    """Start an import job (JSON array or CSV, up to 50,000 rows): 202 with its id; poll
    `GET /api/v1/contacts/imports/{id}`; `contact_import.completed` fires at the end."""
    items = await _import_items(request, settings)
    return ok(await service.submit_import(pool, _owner(p), items, settings.import_max_rows))


@router.get(
    "/contacts/imports/{import_id}",
    response_model=SuccessEnvelope[ImportJob],
    tags=["contacts"],
)
async def get_import(import_id: str, p: contacts_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.get_import(pool, _owner(p), _id(import_id, "Import")))


async def _import_items(request: Request, settings: CampaignsSettings) -> list[Any]:
    """The rows of an import body (JSON array or CSV), read within the import's byte cap."""
    body = await _read_limited(request, settings.import_max_bytes)
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media in ("text/csv", "application/csv"):
        return service.parse_import_csv(body)
    if media in ("application/json", ""):
        return service.parse_import_json(body)
    raise ApiError(
        "Send application/json or text/csv.",
        code="unsupported_media_type",
        details=[ErrorDetail(field="header.content-type", message=media)],
    )


@router.get("/contacts/{contact_id}", response_model=SuccessEnvelope[Contact], tags=["contacts"])
async def get_contact(contact_id: str, p: contacts_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.get_contact(pool, _owner(p), _id(contact_id, "Contact")))


@router.put("/contacts/{contact_id}", response_model=SuccessEnvelope[Contact], tags=["contacts"])
async def update_contact(
    contact_id: str, p: contacts_scope, pool: Pool, body: ContactUpdate
) -> dict[str, Any]:
    cid = _id(contact_id, "Contact")
    return ok(await service.update_contact(pool, _owner(p), cid, body))


@router.delete("/contacts/{contact_id}", response_model=SuccessEnvelope[Deleted], tags=["contacts"])
async def delete_contact(contact_id: str, p: contacts_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.delete_contact(pool, _owner(p), _id(contact_id, "Contact")))


# ------------------------------------------------------------ templates


@router.get("/templates", response_model=SuccessEnvelope[list[Template]], tags=["templates"])
async def list_templates(
    p: templates_scope,
    pool: Pool,
    params: CreatedParams,
    name: Annotated[str | None, Query(max_length=200, description="Exact name, any case.")] = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
) -> dict[str, Any]:
    flt = TemplateFilter(name=name, created_after=created_after, created_before=created_before)
    return (await service.list_templates(pool, _owner(p), flt, params)).envelope()


@router.post(
    "/templates", status_code=201, response_model=SuccessEnvelope[Template], tags=["templates"]
)
async def create_template(p: templates_scope, pool: Pool, body: TemplateCreate) -> dict[str, Any]:
    return ok(await service.create_template(pool, _owner(p), body))


@router.get(
    "/templates/{template_id}", response_model=SuccessEnvelope[Template], tags=["templates"]
)
async def get_template(template_id: str, p: templates_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.get_template(pool, _owner(p), _id(template_id, "Template")))


@router.put(
    "/templates/{template_id}", response_model=SuccessEnvelope[Template], tags=["templates"]
)
async def update_template(
    template_id: str, p: templates_scope, pool: Pool, body: TemplateUpdate
) -> dict[str, Any]:
    tid = _id(template_id, "Template")
    return ok(await service.update_template(pool, _owner(p), tid, body))


@router.delete(
    "/templates/{template_id}", response_model=SuccessEnvelope[Deleted], tags=["templates"]
)
async def delete_template(template_id: str, p: templates_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.delete_template(pool, _owner(p), _id(template_id, "Template")))


@router.post(
    "/templates/{template_id}/preview",
    response_model=SuccessEnvelope[Preview],
    tags=["templates"],
)
async def preview_template(
    template_id: str,
    p: templates_scope,
    pool: Pool,
    body: Annotated[PreviewRequest | None, Body()] = None,
) -> dict[str, Any]:
    tid = _id(template_id, "Template")
    return ok(await service.preview_template(pool, _owner(p), tid, body or PreviewRequest()))


# ------------------------------------------------------------ campaigns


@router.get("/campaigns", response_model=SuccessEnvelope[list[Campaign]], tags=["campaigns"])
async def list_campaigns(
    p: campaigns_scope,
    pool: Pool,
    params: CreatedParams,
    status: CampaignStatus | None = None,
    name: Annotated[str | None, Query(max_length=200, description="Exact name, any case.")] = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
) -> dict[str, Any]:
    flt = CampaignFilter(
        status=status, name=name, created_after=created_after, created_before=created_before
    )
    return (await service.list_campaigns(pool, _owner(p), flt, params)).envelope()


@router.post(
    "/campaigns", status_code=201, response_model=SuccessEnvelope[Campaign], tags=["campaigns"]
)
async def create_campaign(p: campaigns_scope, pool: Pool, body: CampaignCreate) -> dict[str, Any]:
    return ok(await service.create_campaign(pool, _owner(p), body))


@router.get(
    "/campaigns/{campaign_id}", response_model=SuccessEnvelope[Campaign], tags=["campaigns"]
)
async def get_campaign(campaign_id: str, p: campaigns_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.get_campaign(pool, _owner(p), _id(campaign_id, "Campaign")))


@router.put(
    "/campaigns/{campaign_id}", response_model=SuccessEnvelope[Campaign], tags=["campaigns"]
)
async def update_campaign(
    campaign_id: str, p: campaigns_scope, pool: Pool, body: CampaignUpdate
) -> dict[str, Any]:
    cid = _id(campaign_id, "Campaign")
    return ok(await service.update_campaign(pool, _owner(p), cid, body))


@router.delete(
    "/campaigns/{campaign_id}", response_model=SuccessEnvelope[Deleted], tags=["campaigns"]
)
async def delete_campaign(campaign_id: str, p: campaigns_scope, pool: Pool) -> dict[str, Any]:
    return ok(await service.delete_campaign(pool, _owner(p), _id(campaign_id, "Campaign")))


for action, handler in (
    ("start", service.start_campaign),
    ("pause", service.pause_campaign),
    ("resume", service.resume_campaign),
    ("cancel", service.cancel_campaign),
):
    router.add_api_route(
        f"/campaigns/{{campaign_id}}/{action}",
        _transition_route(handler, campaigns_scope),
        methods=["POST"],
        response_model=SuccessEnvelope[Campaign],
        tags=["campaigns"],
        name=f"{action}_campaign",
    )

# ------------------------------------------------------------ analytics


@router.get("/analytics/emails", response_model=SuccessEnvelope[EmailAnalytics], tags=["analytics"])
async def email_analytics(
    p: analytics_scope,
    pool: Pool,
    period: Annotated[
        str, Query(pattern=PERIOD_PATTERN, description="Days back, `1d` to `90d`.")
    ] = "7d",
) -> dict[str, Any]:
    return ok(await service.email_analytics(pool, _owner(p), period))


@router.get(
    "/analytics/campaigns/{campaign_id}",
    response_model=SuccessEnvelope[CampaignAnalytics],
    tags=["analytics"],
)
async def campaign_analytics(
    campaign_id: str,
    p: analytics_scope,
    pool: Pool,
    period: Annotated[
        str | None,
        Query(
            pattern=r"^[1-9][0-9]?d$",
            description="Days back, `1d` to `90d` (today included); absent: lifetime.",
        ),
    ] = None,
) -> dict[str, Any]:
    cid = _id(campaign_id, "Campaign")
    return ok(await service.campaign_analytics(pool, _owner(p), cid, period))


@router.post(
    "/conversions",
    status_code=201,
    response_model=SuccessEnvelope[Conversion],
    tags=["analytics"],
)
async def record_conversion(
    p: contacts_scope, pool: Pool, body: ConversionCreate, response: Response
) -> dict[str, Any]:
    """Record a goal a contact reached (idempotent: 200 with the stored conversion when
    the same contact, goal and occurred_at was recorded before)."""
    out = await service.record_conversion(pool, _owner(p), body)
    if not out["created"]:
        response.status_code = 200
    return ok(out)


@router.get(
    "/analytics/contacts/{contact_id}",
    response_model=SuccessEnvelope[ContactAnalytics],
    tags=["analytics"],
)
async def contact_analytics(
    contact_id: str,
    p: analytics_scope,
    pool: Pool,
    limit: Limit = 50,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` (opaque).")
    ] = None,
) -> dict[str, Any]:
    cid = _id(contact_id, "Contact")
    data, pagination = await service.contact_analytics(pool, _owner(p), cid, limit, cursor)
    return ok(data, pagination=pagination)


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 past `max_bytes` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(f"The body is larger than {max_bytes} bytes.", code="payload_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(f"The body is larger than {max_bytes} bytes.", code="payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def create_api(settings: CampaignsSettings | None = None) -> FastAPI:
    settings = settings or CampaignsSettings()
    resources = Resources(settings, schema="campaigns")
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        routers=[router],
        title="PenguinMails campaigns service",
    )


__all__ = ["create_api", "router"]
