"""A small Server-Sent Events reader for the tests: frames as the wire carries them (per the
WHATWG parsing rules: `field: value` lines, comments starting with `:`, a blank line ends a
frame), read from a real streamed HTTP response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.data is not None
        return orjson.loads(self.data)


class SseStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self.comments: list[str] = []

    async def frame(self, timeout: float = 15.0) -> Frame | None:
        """The next frame (a comment-only frame too); None when the stream ended."""
        frame = Frame()
        seen = False

        async def read() -> Frame | None:
            nonlocal seen
            async for line in self._lines:
                if line == "":
                    if seen:
                        return frame
                    continue
                seen = True
                if line.startswith(":"):
                    frame.comments.append(line[1:].strip())
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    frame.data = value if frame.data is None else frame.data + "\n" + value
                elif name in ("id", "event", "retry"):
                    setattr(frame, name, value)
            return frame if seen else None

        return await asyncio.wait_for(read(), timeout)

    async def event(self, timeout: float = 15.0) -> Frame | None:
        """The next frame that carries data (skipping heartbeats); None when it ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            frame = await self.frame(max(remaining, 0.01))
            if frame is None or frame.data is not None:
                return frame


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any
) -> AsyncIterator[SseStream]:
    async with client.stream(
        "GET", url, headers=headers, params=params, timeout=httpx.Timeout(10, read=60)
    ) as response:
        yield SseStream(response)
