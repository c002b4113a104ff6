"""Vault (OpenBao-compatible) access: KV v2 reads/writes through hvac, off the event loop.

hvac is synchronous; every call runs in a worker thread so an API process never blocks its
event loop on Vault. Authentication is a token (dev) or an AppRole (production), one per
service, whose policy limits it to that service's own paths.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions

log = logging.getLogger(__name__)
T = TypeVar("T")


class VaultError(RuntimeError):
    """Vault could not be reached or refused the request."""


class VaultSecretNotFound(VaultError):
    """The secret path or field does not exist."""


@dataclass(frozen=True)
class VaultRef:
    """A parsed `vault:<mount>/<path>#<field>` reference (field defaults to `value`)."""

    mount: str
    path: str
    field: str

    PREFIX = "vault:"

    @classmethod
    def parse(cls, raw: str) -> VaultRef:
        if not raw.startswith(cls.PREFIX):
            raise ValueError(f"not a vault reference: {raw!r}")
        body = raw[len(cls.PREFIX) :]
        location, _, field = body.partition("#")
        mount, _, path = location.strip("/").partition("/")
        if not mount or not path:
            raise ValueError(f"vault reference needs <mount>/<path>: {raw!r}")
        return cls(mount=mount, path=path, field=field or "value")

    def __str__(self) -> str:
        return f"vault:{self.mount}/{self.path}#{self.field}"


def make_client(
    addr: str,
    token: str | None = None,
    role_id: str | None = None,
    secret_id: str | None = None,
    timeout: float = 5.0,
) -> hvac.Client:
    """A logged-in hvac client: token auth when a token is given, else AppRole."""
    client = hvac.Client(url=addr, token=token, timeout=timeout)
    if not token and role_id:
        try:
            client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        except (hvac.exceptions.VaultError, OSError) as exc:
            raise VaultError(f"AppRole login to {addr} failed: {type(exc).__name__}") from exc
    return client


def read_secret_sync(client: hvac.Client, ref: VaultRef) -> str:
    try:
        resp = client.secrets.kv.v2.read_secret_version(
            path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath as exc:
        raise VaultSecretNotFound(f"{ref}: secret not found") from exc
    except hvac.exceptions.Forbidden as exc:
        raise VaultError(f"{ref}: permission denied") from exc
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise VaultError(f"{ref}: {type(exc).__name__}") from exc
    data: dict[str, Any] = resp["data"]["data"]
    if ref.field not in data:
        raise VaultSecretNotFound(f"{ref}: field {ref.field!r} not found")
    return str(data[ref.field])


class Vault:
    """Async facade over one service's KV v2 mount.

    With AppRole credentials, an expired or revoked token is replaced by a fresh login on
    the first refused call, so a long-lived process outlives its token's max TTL.
    """

    def __init__(
        self,
        client: hvac.Client,
        mount: str = "secret",
        *,
        role_id: str | None = None,
        secret_id: str | None = None,
    ) -> None:
        self._client = client
        self.mount = mount
        self._role_id = role_id
        self._secret_id = secret_id
        self._login_lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        addr: str,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        *,
        mount: str = "secret",
    ) -> Vault:
        client = make_client(addr, token=token, role_id=role_id, secret_id=secret_id)
        if token:
            return cls(client, mount)
        return cls(client, mount, role_id=role_id, secret_id=secret_id)

    def _with_login(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except hvac.exceptions.Forbidden:
            if not self._role_id:
                raise
            with self._login_lock:
                log.info("vault token refused; logging in again with the AppRole")
                self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
            return fn()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._with_login, fn)

    async def read(self, path: str) -> dict[str, Any] | None:
        def _read() -> dict[str, Any] | None:
            try:
                resp = self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            return dict(resp["data"]["data"])

        return await self._run(_read)

    async def write(self, path: str, data: dict[str, Any]) -> None:
        await self._run(
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, mount_point=self.mount
            )
        )

    async def delete(self, path: str) -> None:
        """Delete every version and the metadata: the secret is gone for good."""
        await self._run(
            lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=path, mount_point=self.mount
            )
        )

    async def is_ready(self) -> bool:
        def _check() -> bool:
            status = self._client.sys.read_health_status(method="GET")
            # hvac returns a Response for non-200 health codes, a dict otherwise.
            if isinstance(status, dict):
                return not status.get("sealed", True)
            return bool(getattr(status, "status_code", 500) == 200)

        try:
            return await asyncio.to_thread(_check)
        except Exception:
            return False
