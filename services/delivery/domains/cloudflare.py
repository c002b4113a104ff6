"""Publishing a domain's records through Cloudflare's DNS API, with the official `cloudflare`
library (the tenant's API token comes from Vault; `base_url` points tests at a local fake).

Only what the platform owns is changed: our DKIM record, our `include:` in the one SPF
record (added to the customer's, never replacing it), the return-path and tracking CNAMEs.
An existing DMARC record is the customer's policy and is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cloudflare
from cloudflare import AsyncCloudflare

from services.delivery.domains.records import Record, RecordPolicy

Outcome = Literal["created", "updated", "unchanged"]


class DnsProviderRejected(Exception):
    """Cloudflare refused (bad token, no permission, no zone for the domain)."""


class DnsProviderUnavailable(Exception):
    """Cloudflare could not be reached or failed (5xx)."""


@dataclass(frozen=True)
class Published:
    purpose: str
    host: str
    outcome: Outcome


def _txt(content: str | None) -> str:
    text = (content or "").strip()
    # Cloudflare may return TXT content quoted ("v=spf1 ...").
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def merge_spf(existing: str, include: str) -> str:
    """`existing` SPF with `include:<include>` added before its final `all` mechanism."""
    terms = existing.split()
    if f"include:{include}".lower() in (t.lower() for t in terms):
        return existing
    at = next((i for i, t in enumerate(terms) if t.lstrip("+-~?").lower() == "all"), len(terms))
    return " ".join([*terms[:at], f"include:{include}", *terms[at:]])


class CloudflarePublisher:
    def __init__(self, api_token: str, base_url: str | None, timeout: float) -> None:
        self.client = AsyncCloudflare(
            api_token=api_token, base_url=base_url, timeout=timeout, max_retries=1
        )

    async def close(self) -> None:
        await self.client.close()

    async def publish(
        self, domain: str, records: list[Record], policy: RecordPolicy
    ) -> list[Published]:
        try:
            zone_id = await self._zone_id(domain)
            return [await self._upsert(zone_id, r, policy) for r in records]
        except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as exc:
            raise DnsProviderRejected(
                f"Cloudflare refused the API token ({exc.status_code})"
            ) from exc
        except (cloudflare.APIConnectionError, cloudflare.InternalServerError) as exc:
            raise DnsProviderUnavailable(f"Cloudflare: {type(exc).__name__}") from exc
        except cloudflare.APIStatusError as exc:
            raise DnsProviderRejected(f"Cloudflare answered {exc.status_code}") from exc
        except UnicodeEncodeError as exc:
            # A token stored before tokens were checked to be header-safe.
            raise DnsProviderRejected(
                "the stored API token cannot be sent in an HTTP header; store it again"
            ) from exc

    async def _zone_id(self, domain: str) -> str:
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            page = await self.client.zones.list(name=candidate)
            for zone in page.result:
                return str(zone.id)
        raise DnsProviderRejected(f"no Cloudflare zone this token can reach holds {domain}")

    async def _upsert(self, zone_id: str, record: Record, policy: RecordPolicy) -> Published:
        page = await self.client.dns.records.list(
            zone_id=zone_id, name={"exact": record.host}, type=record.type
        )
        existing = list(page.result)
        content = record.value
        if record.purpose == "spf":
            existing = [r for r in existing if _txt(r.content).lower().startswith("v=spf1")]
            if existing:
                content = merge_spf(_txt(existing[0].content), policy.spf_include)
        if record.purpose == "dmarc" and existing:
            return Published(record.purpose, record.host, "unchanged")
        if not existing:
            await self.client.dns.records.create(
                zone_id=zone_id, name=record.host, type=record.type, content=content, ttl=1
            )
            return Published(record.purpose, record.host, "created")
        current = existing[0]
        if _txt(current.content) == content:
            return Published(record.purpose, record.host, "unchanged")
        await self.client.dns.records.update(
            current.id,
            zone_id=zone_id,
            name=record.host,
            type=record.type,
            content=content,
            ttl=1,
        )
        return Published(record.purpose, record.host, "updated")
