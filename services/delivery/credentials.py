"""ESP credentials from Vault: a tenant's own (`<tenant_credentials_path>/<tenant>/<provider>`)
win over the platform's (`<esp_credentials_path>/<provider>`). Cached briefly per process so a
send does not cost a Vault round trip; a rotated secret takes effect within the TTL.
"""

from __future__ import annotations

import time
from typing import Any

from libs.common.vault import Vault


class CredentialStore:
    def __init__(
        self, vault: Vault | None, platform_path: str, tenant_path: str, ttl: float
    ) -> None:
        self.vault = vault
        self.platform_path = platform_path.strip("/")
        self.tenant_path = tenant_path.strip("/")
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def _read(self, path: str) -> dict[str, Any] | None:
        hit = self._cache.get(path)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        value = await self.vault.read(path) if self.vault else None
        self._cache[path] = (now, value)
        return value

    async def get(self, provider: str, tenant_id: str | None) -> tuple[str, dict[str, Any]]:
        """(owner, credentials): owner is the tenant id or "platform"; {} when none exist."""
        if tenant_id:
            own = await self._read(f"{self.tenant_path}/{tenant_id}/{provider}")
            if own:
                return tenant_id, own
        return "platform", await self._read(f"{self.platform_path}/{provider}") or {}
