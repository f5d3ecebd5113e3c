"""Many detectors, one frame: what N detectors on one image cost, alone and together.

``python -m intellioptics_inference.bench_multi`` (``make bench-multi``, also run by
``make bench-edge``) builds 8 detectors on the real EfficientNet-Lite0 export, each with
its own classifier and OODD heads (fused, as the service serves them), and one 640x480
JPEG. For N = 1, 2, 4 and 8 it measures, in alternating one-second slices (background
load falls on all runs alike):

- in process: N ``predict`` calls one after the other (each decodes and runs its own
  backbone), against one :func:`~intellioptics_common.runtime.answer_many` (one decode,
  one backbone pass, N heads);
- over HTTP, the inference service: N ``POST /infer`` against one ``POST /infer/multi``;

and, as the yardstick, the raw ONNX Runtime run of one detector's fused graph. It
rewrites only the ``## Many detectors, one frame`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from intellioptics_common.imaging import DEFAULT_LIMITS
from intellioptics_common.runtime import DetectorModel, RuntimeOptions, SharedBackbones, answer_many, default_fuser
from intellioptics_inference.bench import bench_jpeg, default_backbone, write_bench_detector, write_section
from intellioptics_inference.loader import load_detector
from intellioptics_inference.loadgen import LoadResult, Poster, interleave, service_process

SECTION = "## Many detectors, one frame"
COUNTS = (1, 2, 4, 8)


def _calls(*calls: Callable[[], str | None]) -> Callable[[], str | None]:
    """Several calls as one request of the load generator (the first error wins)."""

    def call() -> str | None:
        for each in calls:
            error = each()
            if error is not None:
                return error
        return None

    return call


def _quiet(function: Callable[[], object]) -> Callable[[], str | None]:
    def call() -> None:
        function()

    return call


@dataclass(frozen=True)
class MultiReport:
    created_at: str
    machine: str
    load_average: tuple[float, float]
    threads: int
    load_s: float  # per detector, with the shared-backbone head
    plain_load_s: float  # one detector without it
    counts: tuple[int, ...]
    results: dict[str, LoadResult]


def _predict_each(models: list[DetectorModel], image: bytes) -> Callable[[], str | None]:
    def call() -> None:
        for model in models:
            model.predict(image, DEFAULT_LIMITS)

    return call


def _answer_all(models: list[DetectorModel], image: bytes) -> Callable[[], str | None]:
    def call() -> None:
        answer_many(models, image, DEFAULT_LIMITS)

    return call


def run(duration_s: float, counts: tuple[int, ...] = COUNTS) -> MultiReport:
    image = bench_jpeg()
    work = Path(tempfile.mkdtemp(prefix="intellioptics-bench-multi-"))
    try:
        models = work / "models"
        ids = [f"det_multi{i}" for i in range(max(counts))]
        for seed, detector_id in enumerate(ids):
            write_bench_detector(models, detector_id, default_backbone(), oodd=True, seed=seed + 1)
        runtime = RuntimeOptions(intra_op_threads=int(os.environ.get("INTELLIOPTICS_ORT_INTRA_OP_THREADS", "1")))
        backbones = SharedBackbones(runtime)
        loaded_at = time.perf_counter()
        detectors = [load_detector(models, d, runtime, default_fuser(), backbones).model for d in ids]
        load_s = (time.perf_counter() - loaded_at) / len(ids)
        plain_at = time.perf_counter()
        load_detector(models, ids[0], runtime, default_fuser())
        plain_load_s = time.perf_counter() - plain_at
        prepared = detectors[0].pre_process(image, DEFAULT_LIMITS)
        runs: dict[tuple[str, int], Callable[[], str | None]] = {
            ("raw ONNX Runtime, one detector", 1): _quiet(lambda: detectors[0].forward(prepared))
        }
        env = {"INTELLIOPTICS_INFERENCE_CACHE_SIZE": str(len(ids)), "INTELLIOPTICS_LOG_LEVEL": "WARNING"}
        with service_process(models, work / "inference.log", **env) as base:
            headers = {"content-type": "image/jpeg"}
            singles = [Poster(f"{base}/infer?detector_id={d}", image, headers) for d in ids]
            for n in counts:
                chosen = detectors[:n]
                runs[(f"in process, {n} x predict", n)] = _predict_each(chosen, image)
                runs[(f"in process, answer_many of {n}", n)] = _answer_all(chosen, image)
                runs[(f"HTTP, {n} x POST /infer", n)] = _calls(*singles[:n])
                query = urllib.parse.urlencode([("detector_id", d) for d in ids[:n]])
                runs[(f"HTTP, POST /infer/multi of {n}", n)] = Poster(f"{base}/infer/multi?{query}", image, headers)
            # Every model loaded before timing starts.
            for call in runs.values():
                call()
            load_before = os.getloadavg()[0]
            slice_s = min(1.0, duration_s)
            results = interleave(
                {(name, 1): call for (name, _), call in runs.items()},
                rounds=max(1, round(duration_s / slice_s)),
                slice_s=slice_s,
            )
            load_after = os.getloadavg()[0]
        named = {name: result for (name, _), result in results.items()}
        return MultiReport(
            created_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            load_average=(load_before, load_after),
            threads=runtime.intra_op_threads,
            load_s=load_s,
            plain_load_s=plain_load_s,
            counts=counts,
            results=named,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def to_markdown(report: MultiReport) -> str:
    results = report.results
    raw = results["raw ONNX Runtime, one detector"].p50_ms
    load_before, load_after = report.load_average
    lines = [
        SECTION,
        "",
        f"Measured {report.created_at} by `make bench-multi` on {report.machine}; 1-minute load "
        f"average {load_before:.1f} when the measurements began, {load_after:.1f} when they ended. "
        f"{report.threads} ONNX Runtime thread(s) per session. Eight detectors on the EfficientNet-Lite0 "
        "export (320x320), each with its own classifier and OODD heads, one 640x480 JPEG; one client, "
        "alternating one-second slices.",
        "",
        f"Raw ONNX Runtime run of one detector's fused graph: p50 **{raw:.1f} ms**.",
        "",
        "| detectors | N x predict p50 ms | answer_many p50 ms | in-process speed-up | N x POST /infer p50 ms "
        "| POST /infer/multi p50 ms | HTTP speed-up | multi / (raw x N) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in report.counts:
        alone = results[f"in process, {n} x predict"].p50_ms
        many = results[f"in process, answer_many of {n}"].p50_ms
        http_alone = results[f"HTTP, {n} x POST /infer"].p50_ms
        http_many = results[f"HTTP, POST /infer/multi of {n}"].p50_ms
        lines.append(
            f"| {n} | {alone:.1f} | {many:.1f} | {alone / many:.2f}x | {http_alone:.1f} | {http_many:.1f} "
            f"| {http_alone / http_many:.2f}x | {http_many / (raw * n):.2f} |"
        )
    errors = sum(r.errors for r in results.values())
    lines += [
        "",
        f"Errors: {errors}. Model load with the shared-backbone head (graph cut, head session, warm-up): "
        f"{1000 * report.load_s:.0f} ms per detector, against {1000 * report.plain_load_s:.0f} ms "
        "without it. The answers of `answer_many` and `/infer/multi` equal each detector's own to 1e-5 "
        "(`edge/inference/tests/test_multi.py`). Streams watched by several detectors post each frame once "
        "to `POST /device-api/v1/image-queries/multi`, which makes this one call.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run (in 1 s slices)")
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if not default_backbone().is_file():
        parser.error(f"{default_backbone()} is missing: run `make backbone`")
    report = run(args.duration)
    section = to_markdown(report)
    print(section)
    if args.json:
        print(json.dumps({name: r.p50_ms for name, r in report.results.items()}, indent=2))
    write_section(args.docs, section, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
