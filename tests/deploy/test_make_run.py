"""`make run` (scripts/run_stack.py) as a person meets it: started for real on free ports
and a fresh data directory, it must print a banner whose curl line and SDK snippet work
as printed, stop cleanly on Ctrl-C (SIGINT) leaving no process behind, and on the next
start reuse its data: the same demo detector, tokens and model, with no retraining. A
service killed with kill -9 is started again and the stack answers again.

The first start trains the demo model with the fast trainer (about a minute on two
cores); the second start only starts the processes.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from groundlight import Groundlight

from intellioptics_training.backbone import BACKBONE_FILE, export_backbone
from intellioptics_training.config import backbone_dir
from tests.support.procs import REPO_ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_STACK = REPO_ROOT / "scripts" / "run_stack.py"
BANNER_END = "print(iq.result)"
FIRST_START_S = 420.0  # seeding trains a model; generous for a loaded two-core machine
RESTART_S = 90.0  # a restarted edge API loads its state and warms its detector
STOP_S = 90.0  # five services, each given 10 s to stop before SIGKILL


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The backbone `make install` exported (data/backbones), else a fresh export: the
    stack's data directory is a temporary one, which has none."""
    installed = backbone_dir().resolve()
    if (installed / BACKBONE_FILE).is_file():
        return installed
    target = tmp_path_factory.mktemp("backbone")
    export_backbone(target)
    return target


@dataclass
class MakeRun:
    """One ``python scripts/run_stack.py``, its merged output collected line by line."""

    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None

    def start(self) -> MakeRun:
        self.process = subprocess.Popen(
            [sys.executable, str(RUN_STACK)], cwd=REPO_ROOT, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_banner(self, timeout: float) -> str:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not any(line.strip() == BANNER_END for line in self.lines):
            if self.process.poll() is not None:
                pytest.fail(f"run_stack exited with {self.process.returncode} before its banner:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"no banner within {timeout:.0f} s:\n{self.output}")
            time.sleep(0.2)
        return self.output

    def wait_line(self, pattern: str, timeout: float) -> str:
        """The first output line matching ``pattern`` (a regex), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.lines if re.search(pattern, line)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s:\n{self.output}")
            time.sleep(0.2)

    def service_pids(self) -> dict[str, int]:
        """The ``started <name> pid <n>`` lines; each service leads its own process group."""
        return {m[1]: int(m[2]) for m in re.finditer(r"^  started (\S+)\s+pid (\d+)", self.output, re.M)}

    def stop(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run_stack did not exit within {STOP_S:.0f} s of {sig.name}:\n{self.output}")

    def kill_leftovers(self) -> None:
        """After a failed test: nothing of this run may outlive it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid in self.service_pids().values():
            if live_in_groups({pid}):
                os.killpg(pid, signal.SIGKILL)
        if self.reader is not None and self.process is not None and self.process.stdout is not None:
            self.reader.join(timeout=10)
            self.process.stdout.close()


@dataclass(frozen=True)
class Banner:
    gateway: str
    admin_token: str
    device_token: str
    detector_id: str
    curl: list[str]
    sdk_snippet: str


def parse_banner(output: str) -> Banner:
    def row(label: str) -> str:
        found = re.search(rf"^  {label}\s+(\S+)", output, re.M)
        assert found, f"banner has no {label!r} row:\n{output}"
        return found[1]

    curl = re.search(r"^  (curl .*\\\n.*)$", output, re.M)
    assert curl, f"banner has no curl line:\n{output}"
    snippet = re.search(r"^  (from groundlight import Groundlight\n(?:  .*\n)*?  print\(iq\.result\))$", output, re.M)
    assert snippet, f"banner has no SDK snippet:\n{output}"
    return Banner(
        gateway=row(re.escape("edge gateway (cameras, SDK)")),
        admin_token=row("admin token"),
        device_token=row(re.escape("device token (edge)")),
        detector_id=row("demo detector"),
        curl=shlex.split(curl[1].replace("\\\n", " ")),  # the shell's line continuation
        sdk_snippet="\n".join(line.removeprefix("  ") for line in snippet[1].splitlines()),
    )


def run_curl_line(curl: list[str]) -> httpx.Response:
    """Send exactly what the printed curl line sends (curl itself need not be installed)."""
    assert curl[0] == "curl"
    method, url, headers, body = "GET", None, {}, b""
    args = iter(curl[1:])
    for arg in args:
        if arg == "-s":
            continue
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(": ")
            headers[name] = value
        elif arg == "--data-binary":
            path = next(args)
            assert path.startswith("@"), path
            body = Path(path[1:]).read_bytes()
        elif arg.startswith("http"):
            url = arg
        else:
            raise AssertionError(f"the test does not know curl option {arg!r}: {curl}")
    assert url is not None, curl
    return httpx.request(method, url, headers=headers, content=body, timeout=30.0)


def live_in_groups(groups: set[int]) -> list[str]:
    """Processes (not zombies) still in any of ``groups``, read from /proc."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgid = text.rsplit(")", 1)[1].split()[:3]
        if int(pgid) in groups and state != "Z":
            live.append(f"{stat.parent.name}: {text.split(')')[0]})")
    return live


def assert_stopped_cleanly(run: MakeRun, sig: signal.Signals) -> None:
    pids = run.service_pids()
    assert set(pids) == {"cloud", "worker", "inference", "edge-api", "streams", "nginx"}, run.output
    code = run.stop(sig)
    assert code == 0, f"exit code {code} after {sig.name}:\n{run.output}"
    assert "Traceback" not in run.output, run.output
    assert all(f"  stopped {name}" in run.lines for name in pids), run.output
    assert live_in_groups(set(pids.values())) == [], "processes outlived make run"


def assert_answers_again(banner: Banner, timeout: float) -> None:
    """The printed curl line answers 201 from the edge again within ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = run_curl_line(banner.curl)
            if answer.status_code == 201 and answer.json()["result"]["from_edge"] is True:
                return
            last = f"HTTP {answer.status_code}: {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    pytest.fail(f"the stack did not answer again within {timeout:.0f} s of the restarts (last: {last})")


def models(banner: Banner, cloud_port: int) -> list[dict[str, object]]:
    response = httpx.get(
        f"http://127.0.0.1:{cloud_port}/v1/detectors/{banner.detector_id}/models",
        headers={"x-api-token": banner.admin_token}, timeout=10.0,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return list(response.json())


def test_make_run_banner_works_stops_cleanly_and_restarts_on_its_data(tmp_path: Path, backbone: Path) -> None:
    data = tmp_path / "data"
    ports = {name: free_port() for name in ("CLOUD", "EDGE_API", "INFERENCE", "GATEWAY", "STREAMS")}
    # Only what this test sets: a developer's INTELLIOPTICS_DATABASE_URL must not leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("INTELLIOPTICS_")}
    env |= {f"INTELLIOPTICS_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"INTELLIOPTICS_DATA_DIR": str(data), "INTELLIOPTICS_BACKBONE_DIR": str(backbone)}

    first = MakeRun(env).start()
    try:
        banner = parse_banner(first.wait_banner(FIRST_START_S))
        assert banner.gateway == f"http://127.0.0.1:{ports['GATEWAY']}"
        assert "  training the demo model (fast trainer)" in first.lines
        trained = models(banner, ports["CLOUD"])
        assert [(m["version"], m["status"]) for m in trained] == [(1, "active")]
        # A newcomer's first answers come from the edge: the demo model is sure of most
        # images (out of fold; was 0.65 accurate and never confident on the mixed set).
        metrics = trained[0]["metrics"]
        assert metrics["oof_balanced_accuracy"] >= 0.9 and metrics["oof_confident_coverage"] >= 0.7, metrics

        answer = run_curl_line(banner.curl)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["detector_id"] == banner.detector_id
        assert body["result"]["label"] in ("YES", "NO") and body["result"]["from_edge"] is True

        # The snippet exactly as printed, in a fresh interpreter with the real SDK.
        snippet = subprocess.run([sys.executable, "-c", banner.sdk_snippet], capture_output=True, text=True, timeout=60)
        assert snippet.returncode == 0, snippet.stderr
        assert re.search(r"from_edge=True label=<Label\.(YES|NO)", snippet.stdout), snippet.stdout
        detector = Groundlight(endpoint=banner.gateway, api_token=banner.admin_token).get_detector(banner.detector_id)
        assert detector.name == "demo-surface-defects"

        assert_stopped_cleanly(first, signal.SIGINT)
    finally:
        first.kill_leftovers()

    second = MakeRun(env).start()
    try:
        again = parse_banner(second.wait_banner(120.0))
        assert (again.detector_id, again.admin_token, again.device_token) == (
            banner.detector_id, banner.admin_token, banner.device_token,
        )  # fmt: skip
        for seeding in ("created demo detector", "generating demo images", "training the demo model"):
            assert seeding not in second.output, f"the second start redid {seeding!r}:\n{second.output}"
        assert models(again, ports["CLOUD"]) == trained, "the second start changed the model registry"
        answer = run_curl_line(again.curl)
        assert answer.status_code == 201 and answer.json()["result"]["from_edge"] is True, answer.text

        # A service that dies is started again and answers; the others keep running.
        before = second.service_pids()
        os.killpg(before["edge-api"], signal.SIGKILL)
        os.kill(before["nginx"], signal.SIGKILL)  # the master only: its workers are left behind
        for name in ("edge-api", "nginx"):
            second.wait_line(rf"^  {name} was killed by SIGKILL; restarting it in 1 s \(see ", 30)
        assert_answers_again(again, timeout=RESTART_S)
        after = second.service_pids()
        assert after["edge-api"] != before["edge-api"] and after["nginx"] != before["nginx"], second.output
        assert {n: after[n] for n in ("cloud", "worker", "inference")} == {
            n: before[n] for n in ("cloud", "worker", "inference")
        }

        # Stopped the way kill, systemd or a CI runner stops it.
        assert_stopped_cleanly(second, signal.SIGTERM)
    finally:
        second.kill_leftovers()
