"""Long versions of the reliability cases (``make soak``): 60 s of load (16 clients, 5
detectors), long OpenAPI fuzzing of the cloud and of the edge, and the cloud down for
2 minutes while images flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import test_outbox_faults as outbox
from tests.reliability.helpers import cloud_server, edge_processes
from tests.reliability.schemathesis_run import run_schemathesis
from tests.reliability.test_load import load_case

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.slow]

FUZZ_EXAMPLES = 50
FUZZ_SECONDS = 540
CLOUD_OUTAGE_S = 120.0
# At ~50 answers a second the outage queues some 6,000 audits, delivered one request at a
# time once the cloud is back: minutes, not the 2 the short case allows.
DRAIN_TIMEOUT_S = 600.0

# A cloud with one detector and a device token (the short outage case's fixture).
cloud = outbox.cloud


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


def test_cloud_down_2_minutes_then_everything_arrives_once(tmp_path: Path, cloud) -> None:
    """test_outbox_faults' cloud outage at soak length: two clients post through nginx,
    every answer is audited (an outbox entry), the cloud is stopped for 2 minutes; the
    edge must keep answering, and every accepted query reach the cloud exactly once."""
    report = outbox.cloud_outage_case(tmp_path, cloud, CLOUD_OUTAGE_S, DRAIN_TIMEOUT_S, late_window_s=10)
    print(report.summary())
    # At least 10 answers a second, to the end of the outage: the growing outbox must not slow the edge down.
    assert report.answered_late > 100, "the edge slowed down or stopped answering while the cloud was down"
    assert report.answered_while_down > 10 * CLOUD_OUTAGE_S
    assert not report.missing and report.duplicated == 0
    assert len(set(report.in_cloud)) == len(report.accepted)
