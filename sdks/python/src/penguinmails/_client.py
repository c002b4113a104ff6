"""`PenguinMails` (sync) and `AsyncPenguinMails`: the transport plus every generated resource."""

from __future__ import annotations

from types import TracebackType

import httpx

from ._core import AsyncTransport, SyncTransport, _config
from ._generated.resources import AsyncResources, Resources


class PenguinMails(Resources):
    """The PenguinMails API client.

    `api_key` defaults to `PENGUINMAILS_API_KEY`, `base_url` to `PENGUINMAILS_BASE_URL` (else
    https://api.penguinmails.com); `access_token` (a dashboard JWT, default
    `PENGUINMAILS_ACCESS_TOKEN`) serves account routes such as `api_keys`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        access_token: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        default_headers: dict[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        config = _config(api_key, access_token, base_url, max_retries, timeout, default_headers)
        self.core = SyncTransport(config, http_client)
        super().__init__(self.core)

    @property
    def base_url(self) -> str:
        return self.core.config.base_url

    def close(self) -> None:
        self.core.close()

    def __enter__(self) -> PenguinMails:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncPenguinMails(AsyncResources):
    """The asyncio client: the same resources, every method awaitable."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        access_token: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        default_headers: dict[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        config = _config(api_key, access_token, base_url, max_retries, timeout, default_headers)
        self.core = AsyncTransport(config, http_client)
        super().__init__(self.core)

    @property
    def base_url(self) -> str:
        return self.core.config.base_url

    async def close(self) -> None:
        await self.core.close()

    async def __aenter__(self) -> AsyncPenguinMails:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
