"""Azurite (the Azure Storage emulator, from npm) for blob tests.

The npm package is declared in ``cloud/api/tests/azurite/package.json`` and installed
into its git-ignored ``node_modules`` the first time a test needs it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import REPO_ROOT, ManagedProcess, free_port, wait_tcp

AZURITE_DIR = REPO_ROOT / "cloud" / "api" / "tests" / "azurite"
# Azurite's fixed development account; the key is public and documented by Microsoft.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary(install_dir: Path = AZURITE_DIR, timeout: float = 600) -> Path:
    """The ``azurite-blob`` executable, running ``npm install`` first when it is missing."""
    binary = install_dir / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("npm not found; install Node.js (make system-deps)")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=install_dir, check=True, timeout=timeout, capture_output=True,
        )  # fmt: skip
    return binary


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


@contextlib.contextmanager
def azurite_blob(base_dir: Path) -> Iterator[str]:
    """Azurite's blob service on a free port with its data in ``base_dir``; yields a connection string."""
    port = free_port()
    process = ManagedProcess(
        "azurite",
        [str(azurite_binary()), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(base_dir / "data"),
         "--skipApiVersionCheck", "--loose", "--silent"],
        base_dir / "azurite.log",
    )  # fmt: skip
    process.start()
    try:
        try:
            wait_tcp(port, timeout=60)
        except TimeoutError as exc:
            raise RuntimeError(f"Azurite did not start:\n{process.tail()}") from exc
        yield connection_string(port)
    finally:
        process.stop(timeout=2)  # it holds no data worth a graceful shutdown
