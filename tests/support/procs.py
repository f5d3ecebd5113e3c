"""Start and stop real processes for tests: free ports, readiness waits, clean shutdown.

Every launcher picks free ports so two test runs can coexist on one machine, writes the
process output to a log file (shown when a wait fails), and stops the process on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_tcp(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout} s")


def wait_http(
    url: str, timeout: float = 30.0, expect: Sequence[int] = (200,), process: ManagedProcess | None = None
) -> None:
    """Poll ``url`` until it answers one of ``expect``; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.poll()} before {url} was ready:\n{process.tail()}")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code in expect:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    tail = process.tail() if process is not None else ""
    raise TimeoutError(f"{url} not ready within {timeout} s (last: {last})\n{tail}")


@dataclass
class ManagedProcess:
    """A child process with its own log file and process group."""

    name: str
    args: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = dict(os.environ)
        if self.env:
            environment.update(self.env)
        log = self.log_path.open("ab")
        self._popen = subprocess.Popen(
            list(self.args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=str(self.cwd or REPO_ROOT),
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self._popen is not None, "process not started"
        return self._popen.pid

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (kill -9 by default)."""
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, sig)
            if sig == signal.SIGKILL:
                self._popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self._popen is None or self._popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, signal.SIGTERM)
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@contextlib.contextmanager
def running(process: ManagedProcess) -> Iterator[ManagedProcess]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


def python_module(name: str, module: str, log_dir: Path, env: Mapping[str, str], *args: str) -> ManagedProcess:
    """A ``python -m <module>`` process of ours, run with the test's interpreter."""
    return ManagedProcess(name, [sys.executable, "-m", module, *args], log_dir / f"{name}.log", env=env)


# --- PostgreSQL ---------------------------------------------------------------------


def _pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))
    if candidates:
        return str(candidates[-1])
    raise FileNotFoundError(f"PostgreSQL server binary {tool!r} not found; run `make system-deps`")


@dataclass
class PostgresCluster:
    data_dir: Path
    port: int
    log_path: Path
    user: str = "postgres"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "60", "start",
             "-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"],
            check=True, capture_output=True, **_as_postgres_user(),
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
            check=False, capture_output=True, **_as_postgres_user(),
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            check=True, capture_output=True,
        )  # fmt: skip
        return self.url(name)


def _as_postgres_user() -> dict[str, object]:
    """PostgreSQL refuses to run as root: drop to 'nobody' when the tests run as root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam("nobody")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@contextlib.contextmanager
def postgres_cluster(base_dir: Path) -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster in ``base_dir`` on a free port, trust auth on loopback.

    As root the server runs as ``nobody``, which cannot reach into pytest's 0700 temp
    directories: the cluster then lives in a fresh world-traversable temp directory.
    """
    if os.geteuid() == 0:
        base_dir = Path(tempfile.mkdtemp(prefix="intellioptics-pg-"))
        os.chmod(base_dir, 0o755)
    data_dir = base_dir / "pgdata"
    data_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "nobody", "nogroup")
    subprocess.run(
        [_pg_bin("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
        check=True, capture_output=True, **_as_postgres_user(),
    )  # fmt: skip
    cluster = PostgresCluster(data_dir=data_dir, port=free_port(), log_path=base_dir / "postgres.log")
    if os.geteuid() == 0:
        cluster.log_path.touch()
        shutil.chown(cluster.log_path, "nobody", "nogroup")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        if os.geteuid() == 0:
            shutil.rmtree(base_dir, ignore_errors=True)


# --- nginx --------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise FileNotFoundError("nginx not found; run `make system-deps`")
    return found


def nginx_process(conf_path: Path, prefix: Path) -> ManagedProcess:
    """Run nginx in the foreground with a private prefix (pid, temp files, logs)."""
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        "nginx",
        [nginx_binary(), "-p", str(prefix), "-c", str(conf_path), "-g", f"daemon off; pid {prefix}/nginx.pid;"],
        prefix / "logs" / "nginx-stdout.log",
    )
