"""The chat upstream: an OpenAI-compatible ``/chat/completions`` reached with one pooled aiohttp session.

aiohttp rather than httpx here because the proxy's cost per request is the gateway's chat throughput: measured on
this machine class, an httpx request to a local upstream cost 0.9-2.4 ms of CPU (its pool scans every idle
connection per request), an aiohttp one 0.22 ms.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from privet.errors import PrivetError

__all__ = ["Upstream", "UpstreamError"]

_MAX_LINE = 1 << 20  # an SSE line longer than this is not a chat chunk


class UpstreamError(PrivetError):
    """The chat upstream failed or answered something that cannot be restored safely (HTTP 502)."""


class Upstream:
    """``base_url`` (ending before ``/chat/completions``), with ``api_key`` sent as a bearer token if given."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Created on the serving loop: an aiohttp session belongs to the loop it was made on.
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                              connector=aiohttp.TCPConnector(limit=256))  # fmt: skip

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError("the chat upstream is not started")
        return self._session

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The upstream's whole reply to ``payload``."""
        try:
            async with self._open().post(self._url, json=payload) as reply:
                if reply.status != 200:
                    raise UpstreamError(f"the upstream answered {reply.status}")
                body = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise UpstreamError("the upstream could not be reached or sent no JSON", "Check upstream.") from None
        if not isinstance(body, dict):
            raise UpstreamError("the upstream's reply is not a JSON object")
        return body

    @contextlib.asynccontextmanager
    async def stream(self, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[bytes]]:
        """The upstream's streamed reply to ``payload``, as lines without their terminators."""
        try:
            reply = await self._open().post(self._url, json=payload)
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("the upstream could not be reached", "Check upstream in serve.yaml.") from None
        try:
            if reply.status != 200:
                raise UpstreamError(f"the upstream answered {reply.status}")
            yield _lines(reply)
        finally:
            reply.release()


async def _lines(reply: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    pending = b""
    async for data in reply.content.iter_any():
        pending += data
        *complete, pending = pending.split(b"\n")
        if len(pending) > _MAX_LINE:
            raise UpstreamError("the upstream sent an over-long line")
        for line in complete:
            yield line.rstrip(b"\r")
    if pending:
        yield pending.rstrip(b"\r")
