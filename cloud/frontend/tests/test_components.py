"""The UI's component tests (Vitest + jsdom: keyboard map, claim/skip/undo session) and its
type check against the cloud's generated OpenAPI types, run from pytest so `make test`
covers them."""

from __future__ import annotations

import subprocess

from cloud.frontend.tests.stack import FRONTEND, ensure_built, require_tools


def test_vitest_suite_passes() -> None:
    require_tools("npm")
    ensure_built()
    completed = subprocess.run(
        ["npm", "test", "--silent", "--", "--reporter=dot"], cwd=FRONTEND, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout


def test_typecheck_against_generated_schema() -> None:
    require_tools("npm")
    ensure_built()
    completed = subprocess.run(
        ["npm", "run", "--silent", "typecheck"], cwd=FRONTEND, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
