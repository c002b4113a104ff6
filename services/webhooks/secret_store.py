"""Endpoint signing secrets in Vault (`secret/webhooks/endpoints/<endpoint id>`).

The Vault record holds the current secret and, for 24 h after a rotation, the previous one:
`{"current", "previous", "previous_expires_at"}`. Secrets never touch Postgres, logs or any
response but the create/rotate ones. Workers cache the active secrets per
(endpoint, `secret_version`): a rotation bumps the version in Postgres, so the next
delivery re-reads Vault instead of signing with a stale secret.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from libs.common.vault import Vault

ROTATION_OVERLAP = timedelta(hours=24)
_CACHE_LIMIT = 20_000


def secret_path(endpoint_id: str) -> str:
    return f"webhooks/endpoints/{endpoint_id}"


class SecretStore:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._cache: dict[tuple[str, int], dict[str, str | None]] = {}

    async def create(self, endpoint_id: str, secret: str) -> None:
        await self._vault.write(
            secret_path(endpoint_id),
            {"current": secret, "previous": None, "previous_expires_at": None},
        )

    async def rotate(self, endpoint_id: str, new_secret: str, now: datetime) -> datetime:
        """Make `new_secret` current; the old one keeps signing until the returned time."""
        record = await self._vault.read(secret_path(endpoint_id)) or {}
        expires = now + ROTATION_OVERLAP
        await self._vault.write(
            secret_path(endpoint_id),
            {
                "current": new_secret,
                "previous": record.get("current"),
                "previous_expires_at": expires.isoformat(),
            },
        )
        return expires

    async def delete(self, endpoint_id: str) -> None:
        await self._vault.delete(secret_path(endpoint_id))

    async def active(self, endpoint_id: str, version: int) -> list[str]:
        """The secrets that sign a request now, newest first."""
        key = (endpoint_id, version)
        record = self._cache.get(key)
        if record is None:
            raw = await self._vault.read(secret_path(endpoint_id))
            if not raw or not raw.get("current"):
                raise LookupError(f"no signing secret in Vault for endpoint {endpoint_id}")
            record = {
                "current": str(raw["current"]),
                "previous": raw.get("previous"),
                "previous_expires_at": raw.get("previous_expires_at"),
            }
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = record
        secrets = [str(record["current"])]
        previous, expires = record.get("previous"), record.get("previous_expires_at")
        if previous and expires and datetime.fromisoformat(expires) > datetime.now(UTC):
            secrets.append(previous)
        return secrets
