"""The benchmark's own pieces: section rewriting and the load generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intellioptics_inference.bench import SECTION, main, write_section
from intellioptics_inference.loadgen import run_concurrently


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Training\n\ntraining numbers\n\n## Edge inference\n\nold\n\n## Later\n\nkeep\n")
    write_section(path, f"{SECTION}\n\nnew numbers\n")
    text = path.read_text()
    assert "training numbers" in text and "keep" in text and "new numbers" in text and "old" not in text
    assert text.index("## Training") < text.index(SECTION) < text.index("## Later")
    fresh = tmp_path / "fresh.md"
    write_section(fresh, f"{SECTION}\n\nfirst\n")
    assert fresh.read_text() == f"# Benchmarks\n\n{SECTION}\n\nfirst\n"


def test_run_concurrently_counts_calls_and_errors() -> None:
    calls = iter(range(10**9))

    def call() -> str | None:
        return "boom" if next(calls) % 5 == 0 else None

    result = run_concurrently("unit", 3, 0.2, call)
    assert result.concurrency == 3 and result.requests > 0 and result.errors > 0
    assert result.requests + result.errors > 20
    assert result.p50_ms <= result.p99_ms


@pytest.mark.slow
@pytest.mark.integration
def test_bench_end_to_end_on_an_installed_package(models_dir: Path, tmp_path: Path, kit) -> None:
    """The whole benchmark, briefly, on a tiny package: every run measured, no errors,
    only its own section written."""
    kit.write_detector(models_dir, "det_tiny")
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## Training\n\nkept\n")
    results = tmp_path / "bench.json"
    argv = ["--package", str(models_dir / "det_tiny"), "--duration", "0.2", "--cycle-detectors", "3"]
    main([*argv, "--cache-size", "2", "--out", str(out), "--json", str(results)])
    report = json.loads(results.read_text())
    assert [r["concurrency"] for r in report["http"]] == [1, 4, 16]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in [*report["raw"], *report["http"]])
    assert report["cycle"]["requests"] == 6 and report["cycle"]["errors"] == 0
    assert report["cycle"]["evictions"] == 1 + 6 - 2  # det_bench, then six cold loads into a cache of 2
    # The service's own resident memory, read from its /metrics, with one model and with a full cache.
    one, full = report["memory_mb"]["inference"]
    assert 30 < one < 4096 and 30 < full < 4096, report["memory_mb"]
    text = out.read_text()
    assert "kept" in text and SECTION in text and "| HTTP /infer | 16 |" in text
    assert "Resident memory" in text and "(2 models loaded): inference" in text
