"""Clients that hold a gateway's connections without finishing a request, for the tests of
its limits: idle connections (nothing sent), slow headers (a byte now and then) and
requests whose body never arrives. Every one is a real TCP connection from loopback;
``close()`` ends them all.
"""

from __future__ import annotations

import contextlib
import re
import resource
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def nginx_seconds(config: Path | str, directive: str) -> float:
    """The value of ``directive`` (in seconds, written ``<n>s``) in an nginx config file or text."""
    text = config.read_text() if isinstance(config, Path) else config
    found = re.search(rf"^\s*{re.escape(directive)}\s+(\d+)s;", text, re.M)
    if not found:
        raise AssertionError(f"{directive} not set (in seconds) in the gateway config")
    return float(found[1])


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed or reset the connection (nothing else is ever sent to us)."""
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def _readable(sockets: list[socket.socket], timeout_s: float) -> list[socket.socket]:
    """poll(), not select(): a thousand sockets have descriptors past select's 1024."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return [by_fd[fd] for fd, _ in poller.poll(timeout_s * 1000)]


@dataclass
class HeldConnections:
    """Open TCP connections to ``port`` that send ``preamble`` and then nothing more."""

    port: int
    sockets: list[socket.socket] = field(default_factory=list)
    opened_at: float = 0.0

    def open(self, count: int, preamble: bytes = b"") -> HeldConnections:
        self.opened_at = time.monotonic()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if preamble:
                sock.sendall(preamble)
            sock.setblocking(False)
            self.sockets.append(sock)
        return self

    def still_open(self) -> int:
        """How many the gateway has not closed (yet)."""
        closed = {sock for sock in _readable(self.sockets, 0) if _closed_by_peer(sock)}
        return len(self.sockets) - len(closed)

    def wait_all_closed(self, timeout: float) -> float:
        """Seconds from ``open`` until the gateway had closed every one; fails after ``timeout``."""
        pending = list(self.sockets)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(pending)} of {len(self.sockets)} connections still open after {timeout} s")
            closed = {sock for sock in _readable(pending, min(remaining, 0.5)) if _closed_by_peer(sock)}
            pending = [sock for sock in pending if sock not in closed]
        return time.monotonic() - self.opened_at

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()


def allow_open_files(count: int) -> None:
    """Raise this process's soft limit on open files to hold ``count`` sockets (a shell's
    default is often 1,024); fails clearly when the hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256  # the test's own files, pipes and the SDK's connections
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise AssertionError(f"the hard limit on open files is {hard}; holding {count} connections needs {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def held_connections(port: int, count: int, preamble: bytes = b"") -> Iterator[HeldConnections]:
    allow_open_files(count)
    held = HeldConnections(port)
    try:
        yield held.open(count, preamble)
    finally:
        held.close()
