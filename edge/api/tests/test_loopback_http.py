"""The edge's own HTTP/1.1 client for ``POST /infer``, against a real socket server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from intellioptics_edge.inference_client import InferenceClient, NotReady
from intellioptics_edge.loopback_http import LoopbackHTTP, LoopbackHTTPError

ANSWER = b'{"ok":true}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


def _ok(body: bytes = ANSWER, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def _serve(handler: Handler, client_calls: Callable[[LoopbackHTTP], Awaitable[None]], **timeouts: float):
    """Run ``client_calls`` against a server whose n-th connection is handled by ``handler``; returns connections."""
    connections = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await handler(reader, writer, connections)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = LoopbackHTTP(
        f"http://127.0.0.1:{port}",
        connect_timeout_s=timeouts.get("connect", 1.0),
        read_timeout_s=timeouts.get("read", 2.0),
    )
    try:
        await client_calls(client)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    return connections


def test_answers_and_keeps_the_connection_alive() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while (request := await _read_request(reader)) is not None:
            seen.append(request)
            writer.write(_ok())

    async def calls(client: LoopbackHTTP) -> None:
        for image in (b"one", b"two"):
            response = await client.post("/infer?detector_id=det_x", image, "image/jpeg")
            assert (response.status_code, response.content) == (200, ANSWER)

    assert asyncio.run(_serve(handler, calls)) == 1
    assert [body for _, body in seen] == [b"one", b"two"]
    assert seen[0][0].startswith(b"POST /infer?detector_id=det_x HTTP/1.1\r\n")
    assert b"content-type: image/jpeg\r\n" in seen[0][0]


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(_ok())
        await writer.drain()  # then close, as uvicorn does after its keep-alive timeout

    async def calls(client: LoopbackHTTP) -> None:
        for _ in range(3):
            assert (await client.post("/infer", b"x", "image/png")).content == ANSWER

    assert asyncio.run(_serve(handler, calls)) == 3


def test_connection_close_and_chunked_answers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await _read_request(reader)
        if number == 1:
            writer.write(_ok(extra=b"connection: close\r\n"))
        else:
            writer.write(
                b'HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
            )

    async def calls(client: LoopbackHTTP) -> None:
        assert (await client.post("/infer", b"x", "image/jpeg")).content == ANSWER
        response = await client.post("/infer", b"x", "image/jpeg")
        assert (response.status_code, response.content) == (503, b'{"a":1}')

    assert asyncio.run(_serve(handler, calls)) == 2


def test_a_silent_server_times_out_and_its_connection_is_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await _read_request(reader)
        if number == 1:
            await asyncio.sleep(1.0)
        else:
            writer.write(_ok())

    async def calls(client: LoopbackHTTP) -> None:
        with pytest.raises(TimeoutError):
            await client.post("/infer", b"x", "image/jpeg")
        assert (await client.post("/infer", b"x", "image/jpeg")).content == ANSWER

    assert asyncio.run(_serve(handler, calls, read=0.2)) == 2


def test_garbage_is_an_error_not_an_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async def calls(client: LoopbackHTTP) -> None:
        with pytest.raises(LoopbackHTTPError, match="unreadable answer"):
            await client.post("/infer", b"x", "image/jpeg")

    asyncio.run(_serve(handler, calls))


def test_only_plain_http_gets_the_fast_hop() -> None:
    assert LoopbackHTTP.for_url("https://inference:8001", connect_timeout_s=1, read_timeout_s=1) is None
    assert LoopbackHTTP.for_url("http://127.0.0.1:8001", connect_timeout_s=1, read_timeout_s=1) is not None


def test_an_unreachable_inference_service_is_not_ready() -> None:
    async def call() -> object:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()  # nothing listens on port now
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as http:
            client = InferenceClient(http, LoopbackHTTP(base, connect_timeout_s=1, read_timeout_s=1))
            return await client.infer("det_x", b"x", "image/jpeg")

    result = asyncio.run(call())
    assert isinstance(result, NotReady)
    assert "unreachable (cannot connect" in result.reason
