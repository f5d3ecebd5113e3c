"""Long versions of the reliability cases (``make soak``): 60 s of load (16 clients, 5
detectors), long OpenAPI fuzzing of the cloud and of the edge, and the cloud down for
2 minutes while images flow."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.reliability import test_outbox_faults as outbox
from tests.reliability.helpers import cloud_server, edge_processes
from tests.reliability.schemathesis_run import run_schemathesis
from tests.reliability.test_load import load_case
from tests.support.procs import wait_http

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
    server, detector_id, device = cloud
    with edge_processes(
        tmp_path / "edge", [detector_id], preset="default", cloud_url=server.url, device_token=device, audit_rate=1.0
    ) as edge:
        accepted: list[str] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=outbox._submitter, args=(edge.gateway_url, device, detector_id, accepted, stop))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        time.sleep(2)
        server.process.stop()
        down_from = len(accepted)
        time.sleep(CLOUD_OUTAGE_S - 10)
        late_from = len(accepted)
        time.sleep(10)
        answered_while_down, answered_late = len(accepted) - down_from, len(accepted) - late_from
        server.process.start()
        wait_http(f"{server.url}/health/live", timeout=90, process=server.process)
        back_at = time.monotonic()
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(30)
        ids = outbox._wait_delivered(server, detector_id, accepted, timeout_s=DRAIN_TIMEOUT_S)
        drained_s = time.monotonic() - back_at
    missing = set(accepted) - set(ids)
    duplicated = len(ids) - len(set(ids))
    print(
        f"cloud down {CLOUD_OUTAGE_S:.0f} s: {answered_while_down} answered by the edge while down "
        f"({answered_late} in its last 10 s), "
        f"{len(accepted)} accepted, {len(set(ids))} in the cloud {drained_s:.0f} s after it was back, "
        f"{len(missing)} missing, {duplicated} duplicated"
    )
    # At least 10 answers a second, to the end of the outage: the growing outbox must not slow the edge down.
    assert answered_late > 100, "the edge slowed down or stopped answering while the cloud was down"
    assert answered_while_down > 10 * CLOUD_OUTAGE_S
    assert not missing and duplicated == 0
    assert len(set(ids)) == len(accepted)
