"""The checked-in typed client (src/api/schema.d.ts) is what ``make frontend-client``
would write from the cloud's OpenAPI today: a route or field changed without
regenerating it fails here, not in a reviewer's browser."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

from cloud.frontend.tests.stack import FRONTEND, ensure_installed, require_tools

CHECKED_IN = FRONTEND / "src" / "api" / "schema.d.ts"


def test_checked_in_schema_matches_the_cloud_openapi(tmp_path: Path) -> None:
    require_tools("npm")
    ensure_installed()
    fresh = tmp_path / "schema.d.ts"
    # The same npm script as `make frontend-client`, pointed at temporary files.
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OPENAPI_JSON": str(tmp_path / "openapi.json"),
        "SCHEMA_OUT": str(fresh),
    }
    completed = subprocess.run(
        ["npm", "run", "--silent", "gen:api"], cwd=FRONTEND, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    expected, actual = fresh.read_text().splitlines(), CHECKED_IN.read_text().splitlines()
    diff = "\n".join(difflib.unified_diff(actual, expected, "schema.d.ts (checked in)", "schema.d.ts (from the API)"))
    assert not diff, f"src/api/schema.d.ts is stale: run `make frontend-client` and commit it.\n{diff[:4000]}"
