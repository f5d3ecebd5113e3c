"""The soak suite runs only under ``make soak`` (INTELLIOPTICS_SOAK=1): each case takes
minutes, far beyond the budget of ``make test``, which still collects and skips them."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("INTELLIOPTICS_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak case: run `make soak` (INTELLIOPTICS_SOAK=1)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
