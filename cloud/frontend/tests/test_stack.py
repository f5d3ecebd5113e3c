"""``require_tools``: a machine without npm, node or Chromium skips the web UI tests on a
developer's machine but fails them in CI, so CI cannot pass without running them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.frontend.tests import stack


def _nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.shutil, "which", lambda _name: None)
    monkeypatch.setattr(stack, "CHROMIUM", Path("/nonexistent/chromium"))


@pytest.mark.parametrize("ci", ["true", "1", "True"])
def test_missing_tools_fail_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    _nothing_installed(monkeypatch)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="npm, node, chromium missing"):
        stack.require_tools("npm", "node", "chromium")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_tools_skip_without_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    _nothing_installed(monkeypatch)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="chromium missing"):
        stack.require_tools("chromium")


def test_present_tools_neither_skip_nor_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chromium = tmp_path / "chromium"
    chromium.touch()
    monkeypatch.setattr(stack.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(stack, "CHROMIUM", chromium)
    monkeypatch.setenv("CI", "true")
    stack.require_tools("npm", "node", "chromium")
