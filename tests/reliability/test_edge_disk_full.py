"""Disk full on the edge data directory (a 2 MB tmpfs): clear JSON errors, no corrupt
database, and answers again as soon as space returns. Needs root to mount."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import EdgeProcesses, edge_processes, is_root, jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECTOR = "det_DiskFull0Brightness0000000000"[:31]


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if not is_root():
        pytest.skip("mounting a tmpfs needs root; run the suite as root to exercise disk-full")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Write until ENOSPC; returns the filler file."""
    filler = directory / "filler.bin"
    with contextlib.suppress(OSError), filler.open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def _submit(edge: EdgeProcesses, value: int) -> httpx.Response:
    return httpx.post(
        f"{edge.gateway_url}/device-api/v1/image-queries",
        params={"detector_id": DETECTOR},
        content=jpeg(value),
        headers={"x-api-token": edge.token, "content-type": "image/jpeg"},
        timeout=30,
    )


def test_disk_full_gives_clear_errors_and_recovers(tmp_path: Path) -> None:
    assert len(DETECTOR) == 31
    with (
        small_tmpfs(tmp_path / "edge-data") as data_dir,
        edge_processes(tmp_path, [DETECTOR], data_dir=data_dir) as edge,
    ):
        before = [_submit(edge, 230) for _ in range(5)]
        assert [r.status_code for r in before] == [201] * 5
        filler = _fill(data_dir)
        during = [_submit(edge, 230 if i % 2 else 20) for i in range(20)]
        statuses = {r.status_code for r in during}
        assert 500 not in statuses, [r.text for r in during if r.status_code == 500][:2]
        for response in during:
            assert response.status_code in (201, 503, 507), response.text
            if response.status_code != 201:
                assert response.json()["code"], response.text
        assert httpx.get(f"{edge.edge_api_url}/health/live", timeout=5).status_code == 200
        filler.unlink()
        after = [_submit(edge, 230) for _ in range(5)]
        assert [r.status_code for r in after] == [201] * 5, [r.text for r in after]
        ids = [r.json()["id"] for r in before + after]
        with httpx.Client(base_url=edge.gateway_url, headers={"x-api-token": edge.token}, timeout=10) as http:
            for iq in ids:
                assert http.get(f"/device-api/v1/image-queries/{iq}").status_code == 200, iq
        database = data_dir / "edge.sqlite3"
        with contextlib.closing(sqlite3.connect(database)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        print(f"disk full: statuses while full {sorted(statuses)}; {len(ids)} stored answers readable after")
