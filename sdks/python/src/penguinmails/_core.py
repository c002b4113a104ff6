"""The transport: auth, retries with backoff, idempotency keys, timeouts, pagination.

`SyncTransport` and `AsyncTransport` share everything but the I/O; the generated resource
classes (`_generated/resources.py`) call `request` and `list` on them.
"""

from __future__ import annotations

import asyncio
import email.utils
import keyword
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypedDict, TypeVar
from urllib.parse import quote

import httpx

from ._errors import APIConnectionError, APITimeoutError, PenguinMailsError, error_for

__version__ = "0.1.0"
DEFAULT_BASE_URL = "https://api.penguinmails.com"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
# The longest Retry-After waited inside one call; a longer one surfaces as RateLimitError.
MAX_RETRY_AFTER = 60.0
T = TypeVar("T")
Auth = Literal["key", "jwt", "none"]


class RequestOptions(TypedDict, total=False):
    max_retries: int
    timeout: float
    idempotency_key: str
    headers: dict[str, str]


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(str(value), safe="")


def _unkeyword(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`from_=...` (a Python keyword, escaped) is the API's `from`."""
    return {
        (k[:-1] if k.endswith("_") and keyword.iskeyword(k[:-1]) else k): v
        for k, v in fields.items()
    }


def _merge(body: Any, fields: dict[str, Any]) -> Any:
    """A body given as a dict, as keyword arguments, or both (keywords win)."""
    fields = _unkeyword(fields)
    if body is None:
        return dict(fields) if fields else None
    if fields and isinstance(body, Mapping):
        return {**body, **fields}
    return body


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def backoff(retry: int) -> float:
    """0.5 s, 1 s, 2 s ... capped at 8 s, minus up to 25 % of jitter."""
    return min(0.5 * 2**retry, 8.0) * (1 - 0.25 * random.random())


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a `Retry-After` header asks for (seconds or an HTTP date), or None."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retryable(status: int) -> bool:
    return status in (408, 429) or (status >= 500 and status != 501)


@dataclass
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    json: Any
    content: bytes | None
    params: list[tuple[str, str]]
    retries: int
    timeout: float
    safe_to_retry: bool


@dataclass
class _Config:
    api_key: str | None
    access_token: str | None
    base_url: str
    max_retries: int
    timeout: float
    default_headers: dict[str, str] = field(default_factory=dict)


def _config(
    api_key: str | None,
    access_token: str | None,
    base_url: str | None,
    max_retries: int | None,
    timeout: float | None,
    default_headers: dict[str, str] | None,
) -> _Config:
    return _Config(
        api_key=api_key or _env("PENGUINMAILS_API_KEY"),
        access_token=access_token or _env("PENGUINMAILS_ACCESS_TOKEN"),
        base_url=(base_url or _env("PENGUINMAILS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        default_headers=dict(default_headers or {}),
    )


def _query(query: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for key, value in _unkeyword(query or {}).items():
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif hasattr(v, "isoformat"):
                v = v.isoformat()
            params.append((key, str(v)))
    return params


class _Base:
    config: _Config

    def _prepare(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        query: Mapping[str, Any] | None,
        auth: Auth,
        idempotent: bool,
        options: RequestOptions | None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> _Call:
        opts = options or {}
        cfg = self.config
        headers = {
            "Accept": "application/json",
            "User-Agent": f"penguinmails-python/{__version__}",
            **cfg.default_headers,
        }
        if auth == "jwt":
            credential = cfg.access_token or cfg.api_key
        elif auth == "key":
            credential = cfg.api_key or cfg.access_token
        else:
            credential = None
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        # One key per call, reused by every retry: the API answers a retry with the stored result.
        key = opts.get("idempotency_key") or (str(uuid.uuid4()) if idempotent else None)
        if key:
            headers["Idempotency-Key"] = key
        if content is not None:
            # A raw body (a CSV file, ...) sent as it is, under its own media type.
            headers["Content-Type"] = content_type or "application/octet-stream"
        headers.update(opts.get("headers", {}))
        return _Call(
            method=method,
            url=cfg.base_url + path,
            headers=headers,
            json=None if content is not None else body,
            content=content,
            params=_query(query),
            retries=opts.get("max_retries", cfg.max_retries),
            timeout=opts.get("timeout", cfg.timeout),
            safe_to_retry=method != "POST" or key is not None,
        )

    @staticmethod
    def _outcome(
        call: _Call, attempt: int, response: httpx.Response | None, exc: Exception | None
    ) -> tuple[float | None, Any]:
        """(seconds to wait before retrying, None) or (None, the result) — or raise."""
        can_retry = call.safe_to_retry and attempt < call.retries
        if response is None:
            if can_retry:
                return backoff(attempt), None
            if isinstance(exc, httpx.TimeoutException):
                raise APITimeoutError(
                    f"Request timed out after {call.timeout} s", code="timeout"
                ) from exc
            raise APIConnectionError(f"Connection error: {exc}", code="connection_error") from exc
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if response.is_success:
            if isinstance(body, dict) and "data" in body:
                return None, (body["data"], body.get("meta") or {})
            return None, (body, {})
        retry_after = parse_retry_after(response.headers)
        if can_retry and _retryable(response.status_code):
            if retry_after is not None and retry_after <= MAX_RETRY_AFTER:
                return retry_after, None
            return backoff(attempt), None
        raise error_for(response.status_code, body, response.headers, retry_after)


class SyncTransport(_Base):
    def __init__(self, config: _Config, http_client: httpx.Client | None = None) -> None:
        self.config = config
        self.http = http_client or httpx.Client()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        auth: Auth = "key",
        idempotent: bool = False,
        options: RequestOptions | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        call = self._prepare(
            method,
            path,
            body=body,
            query=query,
            auth=auth,
            idempotent=idempotent,
            options=options,
            content=content,
            content_type=content_type,
        )
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self.http.request(
                    call.method,
                    call.url,
                    headers=call.headers,
                    json=call.json,
                    content=call.content,
                    params=call.params,
                    timeout=call.timeout,
                )
            except httpx.TransportError as exc:
                error = exc
            wait, result = self._outcome(call, attempt, response, error)
            if wait is None:
                return result  # type: ignore[no-any-return]
            time.sleep(wait)
            attempt += 1

    def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.send(method, path, **kw)[0]

    def list(self, method: str, path: str, **kw: Any) -> SyncPage[Any]:
        data, meta = self.send(method, path, **kw)
        return SyncPage(self, method, path, kw, data, meta)

    def close(self) -> None:
        self.http.close()


class AsyncTransport(_Base):
    def __init__(self, config: _Config, http_client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.http = http_client or httpx.AsyncClient()

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        auth: Auth = "key",
        idempotent: bool = False,
        options: RequestOptions | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        call = self._prepare(
            method,
            path,
            body=body,
            query=query,
            auth=auth,
            idempotent=idempotent,
            options=options,
            content=content,
            content_type=content_type,
        )
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self.http.request(
                    call.method,
                    call.url,
                    headers=call.headers,
                    json=call.json,
                    content=call.content,
                    params=call.params,
                    timeout=call.timeout,
                )
            except httpx.TransportError as exc:
                error = exc
            wait, result = self._outcome(call, attempt, response, error)
            if wait is None:
                return result  # type: ignore[no-any-return]
            await asyncio.sleep(wait)
            attempt += 1

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        return (await self.send(method, path, **kw))[0]

    def list(self, method: str, path: str, **kw: Any) -> AsyncPager[Any]:
        return AsyncPager(self, method, path, kw)

    async def close(self) -> None:
        await self.http.aclose()


# ---------------------------------------------------------------- pagination


def _next_kw(kw: dict[str, Any], data: list[Any], meta: dict[str, Any]) -> dict[str, Any] | None:
    """The keyword arguments of the next page's request, or None after the last page."""
    pagination = meta.get("pagination") or {}
    cursor = pagination.get("next_cursor")
    has_more = pagination.get("has_more", cursor is not None)
    if not data or not has_more:
        return None
    query = dict(kw.get("query") or {})
    if cursor:
        query.pop("offset", None)
        query["cursor"] = cursor
    else:
        query["offset"] = int(pagination.get("offset", query.get("offset") or 0)) + len(data)
    return {**kw, "query": query}


class SyncPage(Generic[T]):
    """One page of a list. Iterating it yields this page's items, then every later page's."""

    def __init__(
        self,
        core: SyncTransport,
        method: str,
        path: str,
        kw: dict[str, Any],
        data: Any,
        meta: dict[str, Any],
    ) -> None:
        self._core, self._method, self._path, self._kw = core, method, path, kw
        self.data: list[T] = data if isinstance(data, list) else []
        self.meta = meta

    @property
    def has_more(self) -> bool:
        return _next_kw(self._kw, self.data, self.meta) is not None

    @property
    def next_cursor(self) -> str | None:
        return (self.meta.get("pagination") or {}).get("next_cursor")

    def next_page(self) -> SyncPage[T] | None:
        kw = _next_kw(self._kw, self.data, self.meta)
        return None if kw is None else self._core.list(self._method, self._path, **kw)

    def iter_pages(self) -> Iterator[SyncPage[T]]:
        page: SyncPage[T] | None = self
        while page is not None:
            yield page
            page = page.next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data

    def __len__(self) -> int:
        return len(self.data)


class AsyncPage(Generic[T]):
    """One page of a list (async). `async for` yields every item of this and later pages."""

    def __init__(
        self,
        core: AsyncTransport,
        method: str,
        path: str,
        kw: dict[str, Any],
        data: Any,
        meta: dict[str, Any],
    ) -> None:
        self._core, self._method, self._path, self._kw = core, method, path, kw
        self.data: list[T] = data if isinstance(data, list) else []
        self.meta = meta

    @property
    def has_more(self) -> bool:
        return _next_kw(self._kw, self.data, self.meta) is not None

    @property
    def next_cursor(self) -> str | None:
        return (self.meta.get("pagination") or {}).get("next_cursor")

    async def next_page(self) -> AsyncPage[T] | None:
        kw = _next_kw(self._kw, self.data, self.meta)
        if kw is None:
            return None
        return await AsyncPager[T](self._core, self._method, self._path, kw)

    async def __aiter__(self) -> AsyncIterator[T]:
        page: AsyncPage[T] | None = self
        while page is not None:
            for item in page.data:
                yield item
            page = await page.next_page()


class AsyncPager(Generic[T]):
    """A list call: `await` it for the first page, or `async for` it for every item."""

    def __init__(self, core: AsyncTransport, method: str, path: str, kw: dict[str, Any]) -> None:
        self._core, self._method, self._path, self._kw = core, method, path, kw

    async def _first(self) -> AsyncPage[T]:
        data, meta = await self._core.send(self._method, self._path, **self._kw)
        return AsyncPage(self._core, self._method, self._path, self._kw, data, meta)

    def __await__(self) -> Generator[Any, None, AsyncPage[T]]:
        return self._first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._first()
        async for item in page:
            yield item


__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncPage",
    "AsyncPager",
    "AsyncTransport",
    "PenguinMailsError",
    "RequestOptions",
    "SyncPage",
    "SyncTransport",
]
