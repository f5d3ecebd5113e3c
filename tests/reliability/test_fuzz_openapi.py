"""schemathesis against both OpenAPI specs: the cloud API directly, the edge API through
its nginx gateway. The check is that nothing answers 5xx. Bounded examples here; the long
run is ``make soak`` (tests/soak)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import cloud_server
from tests.reliability.schemathesis_run import run_schemathesis
from tests.support.edge_stack import edge_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 5
MAX_TIME_S = 15  # per API, so that make test stays in budget; soak runs without it
DETECTOR = "det_" + "FuzzTarget0Brightness000001"


def test_cloud_openapi_has_no_server_errors(tmp_path: Path) -> None:
    with cloud_server(tmp_path, INTELLIOPTICS_AUTH_MAX_FAILURES="0") as server:
        result = run_schemathesis(
            f"{server.url}/openapi.json",
            base_url=None,
            token=server.token,
            report_dir=tmp_path / "report",
            max_examples=MAX_EXAMPLES,
            max_time_s=MAX_TIME_S,
        )
        assert server.process.poll() is None, "the cloud API died under fuzzing"
    print(f"cloud: {result.cases} schemathesis cases, {result.failures} server errors")
    assert result.cases > 200, result.output[-3000:]
    assert result.returncode == 0, result.output[result.output.find("FAILURES") :][:6000]


def test_edge_openapi_through_nginx_has_no_server_errors(tmp_path: Path) -> None:
    config = {"detectors": [{"detector_id": DETECTOR, "edge_inference_config": "no_cloud", "name": "fuzz"}]}
    with edge_stack(
        tmp_path, config, {DETECTOR: ("NO", "YES")}, extra_env={"INTELLIOPTICS_AUTH_MAX_FAILURES": "0"}
    ) as stack:
        result = run_schemathesis(
            f"{stack.edge_api_url}/openapi.json",
            base_url=stack.gateway_url,
            token=stack.token,
            report_dir=tmp_path / "report",
            max_examples=MAX_EXAMPLES,
            max_time_s=MAX_TIME_S,
        )
    print(f"edge: {result.cases} schemathesis cases, {result.failures} server errors")
    assert result.cases > 100, result.output[-3000:]
    assert result.returncode == 0, result.output[result.output.find("FAILURES") :][:6000]
