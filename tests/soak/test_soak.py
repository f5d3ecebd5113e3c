"""Long versions of the reliability cases (``make soak``): 60 s of load, long fuzzing,
repeated inference kills and PostgreSQL restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import cloud_server, edge_processes
from tests.reliability.schemathesis_run import run_schemathesis
from tests.reliability.test_load import load_case

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.slow]

FUZZ_EXAMPLES = 50
FUZZ_SECONDS = 540


def test_load_60_s_16_clients_5_detectors(tmp_path: Path) -> None:
    report = load_case(tmp_path, 60)
    assert report["requests"] > 1000


def test_cloud_openapi_long_fuzz(tmp_path: Path) -> None:
    with cloud_server(tmp_path, INTELLIOPTICS_AUTH_MAX_FAILURES="0") as server:
        result = run_schemathesis(
            f"{server.url}/openapi.json",
            base_url=None,
            token=server.token,
            report_dir=tmp_path / "report",
            max_examples=FUZZ_EXAMPLES,
            max_time_s=FUZZ_SECONDS,
        )
    print(f"cloud long fuzz: {result.cases} cases, {result.failures} server errors")
    assert result.returncode == 0, result.output[result.output.find("FAILURES") :][:6000]


def test_edge_openapi_long_fuzz(tmp_path: Path) -> None:
    detector = "det_" + "FuzzTarget0Brightness000001"
    with edge_processes(tmp_path, [detector], extra_env={"INTELLIOPTICS_AUTH_MAX_FAILURES": "0"}) as edge:
        result = run_schemathesis(
            f"{edge.edge_api_url}/openapi.json",
            base_url=edge.gateway_url,
            token=edge.token,
            report_dir=tmp_path / "report",
            max_examples=FUZZ_EXAMPLES,
            max_time_s=FUZZ_SECONDS,
        )
    print(f"edge long fuzz: {result.cases} cases, {result.failures} server errors")
    assert result.returncode == 0, result.output[result.output.find("FAILURES") :][:6000]
