"""Routes of `/api/v1/domains` (scope `manage_domains`, `services/delivery/auth.py`); the
`DomainService` is `request.app.state.delivery.domains`."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from libs.common.http import SuccessEnvelope, ok
from libs.common.pagination import decode_keyset, encode_cursor
from services.delivery.auth import Manager
from services.delivery.domains.schemas import (
    CreateDomainRequest,
    DnsCredentialsRequest,
    Domain,
    PublishResult,
    UpdateDomainRequest,
)
from services.delivery.domains.service import DomainService


def _domains(request: Request) -> DomainService:
    svc: DomainService = request.app.state.delivery.domains
    return svc


Domains = Annotated[DomainService, Depends(_domains)]


api = APIRouter(prefix="/api/v1/domains", tags=["domains"])


@api.post("", status_code=201, response_model=SuccessEnvelope[Domain])
async def create_domain(body: CreateDomainRequest, p: Manager, svc: Domains) -> Any:
    """Create a sending domain: a new DKIM key pair (private key in Vault) and the DNS
    records to publish. The domain is `pending` until verified."""
    return ok(await svc.create(p.tenant_id, body.name))


@api.get("", response_model=SuccessEnvelope[list[Domain]])
async def list_domains(
    p: Manager,
    svc: Domains,
    status: Literal["pending", "verified", "failed"] | None = None,
    limit: int = Query(default=25, ge=1, le=100),
    offset: int = Query(default=0, ge=0, le=10_000),
    cursor: str | None = Query(default=None, max_length=512),
) -> Any:
    after = decode_keyset(cursor) if cursor else None
    items, total = await svc.list(
        p.tenant_id, status=status, after=after, limit=limit + 1, offset=offset
    )
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more else None
    return ok(
        items,
        pagination={
            "limit": limit,
            "offset": offset,
            "total": total,
            "next_cursor": next_cursor,
            "has_more": more,
        },
    )


@api.put("/dns-credentials", status_code=204)
async def store_dns_credentials(body: DnsCredentialsRequest, p: Manager, svc: Domains) -> Response:
    """Store the Cloudflare API token used by `POST /domains/{id}/publish` (in Vault)."""
    await svc.store_dns_credentials(p.tenant_id, body)
    return Response(status_code=204)


@api.get("/{domain_id}", response_model=SuccessEnvelope[Domain])
async def get_domain(domain_id: str, p: Manager, svc: Domains) -> Any:
    return ok(await svc.get(p.tenant_id, domain_id))


@api.patch("/{domain_id}", response_model=SuccessEnvelope[Domain])
async def update_domain(domain_id: str, body: UpdateDomainRequest, p: Manager, svc: Domains) -> Any:
    """Set the domain's default sender (an address at this domain)."""
    return ok(await svc.update(p.tenant_id, domain_id, body))


@api.delete("/{domain_id}", status_code=204)
async def delete_domain(domain_id: str, p: Manager, svc: Domains) -> Response:
    """Delete the domain and its DKIM keys (from Vault)."""
    await svc.delete(p.tenant_id, domain_id)
    return Response(status_code=204)


@api.post("/{domain_id}/verify", response_model=SuccessEnvelope[Domain])
async def verify_domain(domain_id: str, p: Manager, svc: Domains) -> Any:
    """Check every record in DNS now."""
    return ok(await svc.verify(p.tenant_id, domain_id))


@api.post("/{domain_id}/rotate-dkim", response_model=SuccessEnvelope[Domain])
async def rotate_dkim(domain_id: str, p: Manager, svc: Domains) -> Any:
    """A new DKIM selector to publish beside the current one; the current key signs
    until the new record verifies, then the old key is deleted."""
    return ok(await svc.rotate_dkim(p.tenant_id, domain_id))


@api.post("/{domain_id}/publish", response_model=SuccessEnvelope[PublishResult])
async def publish_domain(domain_id: str, p: Manager, svc: Domains) -> Any:
    """Create or update the records through Cloudflare with the stored token."""
    return ok(await svc.publish(p.tenant_id, domain_id))
