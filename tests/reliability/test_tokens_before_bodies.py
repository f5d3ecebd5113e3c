"""Who asks is checked before what is sent is read, on the cloud and on the edge (issue 11,
finding 9: bodies were read, and multipart spooled to disk, before the token was checked).

Real processes and a raw socket: the client declares a 64 MiB body, sends it as fast as the
server takes it and stops when an answer arrives. What it managed to send is an upper
bound of what the server read (the rest sat in kernel socket buffers). The cloud runs with
its own TMPDIR, where Starlette would spool a multipart upload: no file may open there.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.reliability.helpers import cloud_server, edge_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY_BYTES = 64 * 1024 * 1024
# Loopback socket buffers (send + receive, autotuned) hold a few MiB at most here; a
# server that read the body would take all 64.
READ_BOUND = 16 * 1024 * 1024
BAD = "io_notarealtokenatall_0123456789abcdef"


@dataclass
class Exchange:
    status: int
    sent: int
    seconds: float
    spooled: int  # most entries seen in the spool directory while sending


def spool_files(spool: Path, pid: int) -> int:
    """Files of ``pid`` under ``spool``: Python's temporary files there have no directory
    entry (O_TMPFILE), so they are found among the process's open file descriptors."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith(str(spool))
        except OSError:
            continue  # closed meanwhile
    return count


def multipart_frame(boundary: str = "x") -> tuple[bytes, bytes]:
    """The start and end of a valid multipart model upload around a file of zeros."""
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n{{}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="primary"; filename="model.buf"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return start.encode(), f"\r\n--{boundary}--\r\n".encode()


def send_until_answered(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    spool: tuple[Path, int] | None = None,
    frame: tuple[bytes, bytes] = (b"", b""),
) -> Exchange:
    target = urlsplit(url)
    head = f"{method} {path} HTTP/1.1\r\nHost: {target.netloc}\r\nContent-Length: {BODY_BYTES}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
    start, end = frame
    body = memoryview(start + bytes(BODY_BYTES - len(start) - len(end)) + end)
    sent, answer, spooled = 0, b"", 0
    started = time.monotonic()
    with socket.create_connection((target.hostname, target.port), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        while b"\r\n" not in answer and time.monotonic() - started < 30:
            writable = [sock] if sent < BODY_BYTES else []
            readable, can_write, _ = select.select([sock], writable, [], 0.5)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif can_write:
                try:
                    sent += sock.send(body[sent : sent + 256 * 1024])
                except (BlockingIOError, InterruptedError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    break
            if spool is not None:
                spooled = max(spooled, spool_files(*spool))
    seconds = time.monotonic() - started
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return Exchange(status, sent, seconds, spooled)


def test_the_cloud_refuses_a_large_upload_with_a_bad_token_before_reading_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with cloud_server(tmp_path / "cloud", TMPDIR=str(spool)) as cloud, cloud.client() as admin:
        detector = admin.post("/v1/detectors", json={"name": "bodies", "query": "q?"}).json()["id"]
        multipart = {"content-type": "multipart/form-data; boundary=x"}
        cases = {
            "model upload, bad token": ("POST", f"/v1/detectors/{detector}/models", {**multipart, "x-api-token": BAD}),
            "model upload, no token": ("POST", f"/v1/detectors/{detector}/models", multipart),
            "image query, bad token": (
                "POST",
                f"/device-api/v1/image-queries?detector_id={detector}",
                {"content-type": "image/jpeg", "x-api-token": BAD},
            ),
            "JSON body, bad token": ("POST", "/v1/detectors", {"content-type": "application/json", "x-api-token": BAD}),
        }
        for name, (method, path, headers) in cases.items():
            frame = multipart_frame() if "multipart" in headers["content-type"] else (b"", b"")
            exchange = send_until_answered(cloud.url, method, path, headers, (spool, cloud.process.pid), frame)
            print(f"cloud {name}: {exchange.status} after {exchange.sent / 2**20:.1f} MiB in {exchange.seconds:.2f} s")
            assert exchange.status == 401, (name, exchange)
            assert exchange.sent < READ_BOUND, (name, exchange)
            assert exchange.seconds < 5, (name, exchange)
            assert exchange.spooled == 0, (name, exchange)


def test_the_edge_refuses_a_large_body_with_a_bad_token_before_reading_it(tmp_path: Path) -> None:
    with edge_processes(tmp_path, ["det_" + "T" * 27]) as edge:
        cases = {
            "image query": ("POST", "/device-api/v1/image-queries?detector_id=det_x", {"content-type": "image/jpeg"}),
            "edge-config": ("PUT", "/edge-config", {"content-type": "application/json"}),
        }
        for name, (method, path, headers) in cases.items():
            for token in (BAD, None):
                sent_headers = headers if token is None else {**headers, "x-api-token": token}
                exchange = send_until_answered(edge.edge_api_url, method, path, sent_headers)
                print(f"edge {name} token={token is not None}: {exchange.status} after {exchange.sent / 2**20:.1f} MiB")
                assert exchange.status == 401, (name, exchange)
                assert exchange.sent < READ_BOUND and exchange.seconds < 5, (name, exchange)
