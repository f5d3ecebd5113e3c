"""A minimal keep-alive HTTP/1.1 client for the one call on every answer: ``POST /infer``.

httpx costs the edge about 3 ms of CPU per image on that hop (measured on 2 cores:
asyncio streams 5.0 ms, httpx 8.2 ms for the same request to the same inference
service), more than everything else the edge does per answer. The inference service
is a known peer on a local plain-HTTP address, so this client speaks only what it
answers: requests with a body, responses with ``content-length`` or chunked bodies.
Everything else (readiness, model states, the cloud) stays on httpx.

A kept-alive connection the server closed while idle fails on reuse before any answer
arrives; such a request is sent once more on a fresh connection (``/infer`` has no side
effect). A request cancelled or failed half-way closes its connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_IDLE = 32
_MAX_HEAD = 64 * 1024


class LoopbackHTTPError(Exception):
    """The peer did not answer in HTTP this client understands (or at all); internal only."""


@dataclass(frozen=True)
class LoopbackResponse:
    status_code: int
    content: bytes


class _StaleConnection(Exception):
    """A reused connection ended before the first byte of the answer."""


class LoopbackHTTP:
    def __init__(self, base_url: str, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url!r} is not a plain http:// URL")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._host_header = parts.netloc.encode("latin-1")
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    @classmethod
    def for_url(cls, base_url: str, *, connect_timeout_s: float, read_timeout_s: float) -> LoopbackHTTP | None:
        """The client, or None when ``base_url`` is not plain HTTP (then httpx serves the hop)."""
        try:
            return cls(base_url, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
        except ValueError:
            return None

    async def post(self, target: str, body: bytes, content_type: str) -> LoopbackResponse:
        """POST ``body`` to ``target`` (path and query); raises TimeoutError or LoopbackHTTPError."""
        head = (
            b"POST " + target.encode("ascii") + b" HTTP/1.1\r\nhost: " + self._host_header
            + b"\r\ncontent-type: " + content_type.encode("latin-1")
            + b"\r\ncontent-length: " + str(len(body)).encode("ascii") + b"\r\n\r\n"
        )  # fmt: skip
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, head, body, reused=True)
            except _StaleConnection:
                continue
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(self._host, self._port)
        except TimeoutError:
            raise
        except OSError as exc:
            raise LoopbackHTTPError(f"cannot connect: {type(exc).__name__}") from exc
        try:
            return await self._exchange(reader, writer, head, body, reused=False)
        except _StaleConnection as exc:
            raise LoopbackHTTPError("the connection closed before an answer") from exc

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        body: bytes,
        *,
        reused: bool,
    ) -> LoopbackResponse:
        keep = done = False
        try:
            async with asyncio.timeout(self._read_timeout_s):
                writer.writelines((head, body))  # one send: the peer wakes once, to a whole request
                try:
                    raw_head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if reused and not exc.partial:
                        raise _StaleConnection from exc
                    raise LoopbackHTTPError("the connection closed before an answer") from exc
                except ConnectionError as exc:
                    if reused:
                        raise _StaleConnection from exc
                    raise LoopbackHTTPError(f"connection failed: {type(exc).__name__}") from exc
                status, length, chunked, keep = _parse_head(raw_head)
                if chunked:
                    content = await _read_chunked(reader)
                elif length is not None:
                    content = await reader.readexactly(length)
                else:
                    content, keep = await reader.read(), False
            done = True
        except TimeoutError:
            raise
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise LoopbackHTTPError(f"unreadable answer: {type(exc).__name__}") from exc
        except OSError as exc:
            raise LoopbackHTTPError(f"connection failed: {type(exc).__name__}") from exc
        finally:
            # Half-way (failed, cancelled, timed out): the stream's state is unknown.
            if done and keep and len(self._idle) < _MAX_IDLE:
                self._idle.append((reader, writer))
            else:
                writer.close()
        return LoopbackResponse(status, content)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


def _parse_head(raw: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content-length, chunked, keep-alive) from a response head."""
    if len(raw) > _MAX_HEAD:
        raise ValueError("response head too long")
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(rest[:3])
    length: int | None = None
    chunked = False
    keep = version == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative content-length")
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            keep = value.strip().lower() != "close" and (keep or value.strip().lower() == "keep-alive")
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, length, chunked, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
