"""`PenguinMails` (sync) and `AsyncPenguinMails`: the transport plus every generated resource."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Literal

import httpx

from ._core import AsyncTransport, RequestOptions, SyncTransport, _config
from ._generated.resources import AsyncEvents, AsyncResources, Contacts, Events, Resources
from ._generated.types import ImportJob
from ._stream import DEFAULT_READ_TIMEOUT, AsyncEventStream, EventStream

IMPORT_MEDIA_TYPES = {"csv": "text/csv", "json": "application/json"}


class ContactsResource(Contacts):
    """`client.contacts`, plus uploading an import file as it is."""

    def submit_import_file(
        self,
        content: bytes | str,
        *,
        format: Literal["csv", "json"],
        request_options: RequestOptions | None = None,
    ) -> ImportJob:
        """Start an import job from a CSV file (header row: email, first_name, ...; other
        columns become custom fields) or a JSON array, sent unchanged:
        POST /api/v1/contacts/imports. Poll `get_import(job["id"])` for its progress."""
        body = content.encode() if isinstance(content, str) else content
        data, _meta = self._core.send(
            "POST",
            "/api/v1/contacts/imports",
            content=body,
            content_type=IMPORT_MEDIA_TYPES[format],
            idempotent=True,
            options=request_options,
        )
        job: ImportJob = data
        return job


class EventsResource(Events):
    """`client.events`: the catalog, test triggers and the live stream."""

    def stream(
        self,
        *,
        types: Sequence[str] | str | None = None,
        campaign_ids: Sequence[str] | str | None = None,
        contact_tags: Sequence[str] | str | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        on_connect: Callable[[], None] | None = None,
        on_reconnect: Callable[[str, float], None] | None = None,
    ) -> EventStream:
        """Live events (GET /api/v1/events/stream): iterate the answer; it reconnects with
        Last-Event-ID by itself, so nothing is missed or repeated."""
        return EventStream(
            self._core,
            types=types,
            campaign_ids=campaign_ids,
            contact_tags=contact_tags,
            last_event_id=last_event_id,
            reconnect=reconnect,
            read_timeout=read_timeout,
            on_connect=on_connect,
            on_reconnect=on_reconnect,
        )


class AsyncEventsResource(AsyncEvents):
    """`client.events` of the asyncio client: `async for event in client.events.stream()`."""

    def stream(
        self,
        *,
        types: Sequence[str] | str | None = None,
        campaign_ids: Sequence[str] | str | None = None,
        contact_tags: Sequence[str] | str | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        on_connect: Callable[[], None] | None = None,
        on_reconnect: Callable[[str, float], None] | None = None,
    ) -> AsyncEventStream:
        """Live events (GET /api/v1/events/stream), as `EventsResource.stream`."""
        return AsyncEventStream(
            self._core,
            types=types,
            campaign_ids=campaign_ids,
            contact_tags=contact_tags,
            last_event_id=last_event_id,
            reconnect=reconnect,
            read_timeout=read_timeout,
            on_connect=on_connect,
            on_reconnect=on_reconnect,
        )


class PenguinMails(Resources):
    """The PenguinMails API client.

    `api_key` defaults to `PENGUINMAILS_API_KEY`, `base_url` to `PENGUINMAILS_BASE_URL` (else
    https://api.penguinmails.com); `access_token` (a dashboard JWT, default
    `PENGUINMAILS_ACCESS_TOKEN`) serves account routes such as `api_keys`.
    """

    contacts: ContactsResource
    events: EventsResource

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
        self.contacts = ContactsResource(self.core)
        self.events = EventsResource(self.core)

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

    events: AsyncEventsResource

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
        self.events = AsyncEventsResource(self.core)

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
