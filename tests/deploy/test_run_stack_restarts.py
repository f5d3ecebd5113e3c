"""`make run`'s supervisor (scripts/run_stack.py): a service that exits is started again
after a backoff, with a line that says so, and the backoff starts over once the service
has run for a while. Real child processes; the clock is the test's, so nothing waits
for a backoff to run out. (tests/deploy/test_make_run.py kill -9s services of the real
stack and sees them answer again.)"""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.integration  # starts (tiny) real processes


def load_run_stack() -> ModuleType:
    """scripts/run_stack.py is a script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location("intellioptics_run_stack", REPO_ROOT / "scripts" / "run_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


run_stack = load_run_stack()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """stop_all ignores SIGINT and SIGTERM (a second Ctrl-C must not abandon the
    services); give pytest its own handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def wait_exit(stack: object, name: str) -> None:
    process = stack.services[name].process  # type: ignore[attr-defined]
    process.wait(timeout=30)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [run_stack.restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_service_that_exits_is_restarted_with_backoff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    stack = run_stack.Stack(data=tmp_path / "data", clock=clock)
    crash = [sys.executable, "-c", "import sys; sys.exit(3)"]
    stack.start("crasher", crash, {})
    first_pid = stack.services["crasher"].process.pid
    try:
        for expected_delay in (1, 2, 4):
            wait_exit(stack, "crasher")
            stack.supervise()
            assert f"crasher exited with code 3; restarting it in {expected_delay} s" in capsys.readouterr().out
            clock.now += expected_delay - 0.5
            stack.supervise()  # not yet
            assert stack.services["crasher"].process.poll() is not None
            clock.now += 0.5
            stack.supervise()
            assert "  started crasher" in capsys.readouterr().out
        assert stack.services["crasher"].process.pid != first_pid

        # Up for longer than STABLE_S before it exits: the wait starts over at 1 s.
        wait_exit(stack, "crasher")
        clock.now += run_stack.STABLE_S
        stack.supervise()
        assert "restarting it in 1 s" in capsys.readouterr().out
    finally:
        stack.stop_all()


def test_a_killed_service_and_what_it_left_are_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Like nginx: the leader dies by SIGKILL, a child of its group lives on; the restart
    first ends the child (it would hold the port), then starts the service again."""
    clock = FakeClock()
    stack = run_stack.Stack(data=tmp_path / "data", clock=clock)
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import os, signal, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    stack.start("leader", [sys.executable, "-c", script], {})
    try:
        deadline = time.monotonic() + 30
        while not child_pid_file.exists() or not child_pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child_pid = int(child_pid_file.read_text())
        leader = stack.services["leader"].process
        leader.kill()
        leader.wait(timeout=10)
        stack.supervise()
        assert "leader was killed by SIGKILL; restarting it in 1 s" in capsys.readouterr().out
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child_pid}").exists() and "Z" not in _state(child_pid):
            assert time.monotonic() < deadline, "the left-behind child still runs"
            time.sleep(0.05)
        clock.now += 1
        stack.supervise()
        assert stack.services["leader"].process.poll() is None
    finally:
        stack.stop_all()
    assert "  stopped leader" in capsys.readouterr().out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
