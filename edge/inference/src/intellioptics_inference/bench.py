"""Edge inference benchmark: the raw ONNX Runtime run, then each HTTP layer in front of it.

Run ``python -m intellioptics_inference.bench`` for the inference service alone, or
``make bench`` (``tests/support/edge_stack.py:run_edge_bench``) for the whole edge. It
builds a realistic model (the EfficientNet-Lite0 backbone export plus a classifier head
and an OODD head, as model packages), one 640x480 JPEG, then measures, at concurrency 1,
4 and 16:

1. the raw model run in-process (the same sessions the service builds, same threads);
2. the inference service over HTTP (keep-alive clients), and every layer a ``serve``
   function puts in front of it (the edge API, nginx);
3. 20 detectors cycled through a cache of 5: every request a cold load; no errors allowed.

All runs are measured in alternating one-second slices, so background load on a shared
machine falls on all of them alike. It rewrites only the ``## Edge inference`` section
of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from intellioptics_common.imaging import DEFAULT_LIMITS
from intellioptics_common.model_package import (
    BackboneRef,
    InputSpec,
    ModelPackage,
    PipelineConfig,
    PredictorMetadata,
    sha256_bytes,
    write_version,
)
from intellioptics_common.runtime import DetectorModel, RuntimeOptions, default_fuser
from intellioptics_inference.loader import load_detector
from intellioptics_inference.loadgen import LoadResult, Poster, get_json, interleave, service_process

SECTION = "## Edge inference"
# A valid edge-config detector id, so that the edge API can serve the same package.
DETECTOR = "det_" + "BenchEfficientNetLite0Model"
RAW = "raw ONNX Runtime"
RAW_PRIMARY = "raw ONNX Runtime, primary only"
IN_PROCESS = "in-process decode+preprocess+model"
HTTP = "HTTP /infer"


# --- the benchmark model ---------------------------------------------------------------


def default_backbone() -> Path:
    data = Path(os.environ.get("INTELLIOPTICS_DATA_DIR", "data"))
    return data / "backbones" / "efficientnet_lite0" / "backbone.onnx"


def head_on_backbone(backbone: onnx.ModelProto, kind: str, feature: str = "feat_head", seed: int = 0) -> bytes:
    """Backbone + pooled linear head: softmax over (NO, YES), or a sigmoid in-domain score."""
    model = onnx.ModelProto()
    model.CopyFrom(backbone)
    graph = model.graph
    channels = 1280
    outputs = 2 if kind == "primary" else 1
    rng = np.random.default_rng(seed)
    graph.initializer.extend(
        [
            numpy_helper.from_array(rng.normal(0, 0.02, (channels, outputs)).astype(np.float32), f"{kind}_head_w"),
            numpy_helper.from_array(np.full(outputs, 0.5, np.float32), f"{kind}_head_b"),
        ]
    )
    out = "probabilities" if kind == "primary" else "in_domain"
    graph.node.extend(
        [
            helper.make_node("GlobalAveragePool", [feature], [f"{kind}_pool"]),
            helper.make_node("Flatten", [f"{kind}_pool"], [f"{kind}_flat"]),
            helper.make_node("Gemm", [f"{kind}_flat", f"{kind}_head_w", f"{kind}_head_b"], [f"{kind}_logits"]),
            helper.make_node("Softmax", [f"{kind}_logits"], [out], axis=1)
            if kind == "primary"
            else helper.make_node("Sigmoid", [f"{kind}_logits"], [out]),
        ]
    )  # fmt: skip
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, outputs]))
    return model.SerializeToString()


def write_bench_detector(
    models_dir: Path, detector_id: str, backbone_path: Path, oodd: bool = True, seed: int = 0
) -> None:
    """A detector on the real backbone with random linear heads (``seed`` picks them)."""
    backbone_bytes = backbone_path.read_bytes()
    backbone = onnx.load_from_string(backbone_bytes)
    ref = BackboneRef(id="efficientnet_lite0_imagenet_v1", sha256=sha256_bytes(backbone_bytes), output="feat_head")
    spec = InputSpec(height=320, width=320)
    for kind in ("primary", "oodd") if oodd else ("primary",):
        write_version(
            models_dir,
            detector_id,
            kind,  # type: ignore[arg-type]
            model_bytes=head_on_backbone(backbone, kind, seed=seed),
            pipeline=PipelineConfig(
                kind=kind,  # type: ignore[arg-type]
                mode="BINARY",
                class_names=("NO", "YES"),
                input=spec,
                output="probabilities" if kind == "primary" else "in_domain",
                backbone=ref,
            ),
            metadata=PredictorMetadata(
                detector_id=detector_id,
                kind=kind,
                trainer="bench",
                backbone_id=ref.id,
                training_set_size=0,  # type: ignore[arg-type]
            ),
            model_id=f"bench-{detector_id}-{kind}",
        )


def bench_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A photo-like 640x480 JPEG (smooth gradients plus sensor noise), about 60-100 kB."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=2)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# --- the measurements --------------------------------------------------------------------


@dataclass(frozen=True)
class CycleResult:
    detectors: int
    cache_size: int
    requests: int
    errors: int
    cold_request_p50_ms: float
    cold_request_max_ms: float
    load_p50_ms: float
    load_max_ms: float
    evictions: int
    error_samples: tuple[str, ...] = ()


@dataclass
class BenchReport:
    created_at: str
    machine: str
    model: str
    fused: bool
    image_bytes: int
    settings: dict[str, str]
    stages_ms: dict[str, float]
    # 1-minute load average when the measurements began and when they ended.
    load_average: tuple[float, float] = (float("nan"), float("nan"))
    raw: list[LoadResult] = field(default_factory=list)
    raw_primary_only: LoadResult | None = None
    in_process: LoadResult | None = None
    http: list[LoadResult] = field(default_factory=list)
    # The layers in front of the inference service (edge API, nginx), innermost first.
    layers: list[LoadResult] = field(default_factory=list)
    cycle: CycleResult | None = None
    # Resident memory (MB) per service: after the HTTP runs (the bench model loaded), and
    # after the cache cycle (the cache full).
    memory_mb: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def end_to_end(self) -> str:
        """The outermost layer measured: what a camera talks to."""
        return self.layers[-1].name if self.layers else HTTP

    def targets(self) -> dict[str, tuple[float, float, bool]]:
        """name -> (measured, limit, met)."""
        out: dict[str, tuple[float, float, bool]] = {}
        front = [r for r in [*self.http, *self.layers] if r.name == self.end_to_end]
        raw1 = next((r for r in self.raw if r.concurrency == 1), None)
        front1 = next((r for r in front if r.concurrency == 1), None)
        front4 = next((r for r in front if r.concurrency == 4), None)
        if raw1 and front1:
            limit = 1.5 * raw1.p50_ms + 3.0
            name = f"{self.end_to_end} p50 at concurrency 1 (ms) <= 1.5 x raw p50 + 3 ms"
            out[name] = (front1.p50_ms, limit, front1.p50_ms <= limit)
        if self.raw and front4:
            # The best raw figure, whichever concurrency gave it: the cores' capacity.
            best = max(r.throughput for r in self.raw)
            name = f"{self.end_to_end} throughput at concurrency 4 (req/s) >= 0.7 x best raw"
            out[name] = (front4.throughput, 0.7 * best, front4.throughput >= 0.7 * best)
        errors = sum(r.errors for r in [*self.http, *self.layers]) + (self.cycle.errors if self.cycle else 0)
        out["errors (all HTTP runs and the cache cycle)"] = (float(errors), 0.0, errors == 0)
        return out


# --- what is served ----------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """An HTTP layer in front of the inference service, as a load-generator call that
    sends the bench image for :data:`DETECTOR` and returns an error text or None."""

    name: str
    call: Callable[[], str | None]


@dataclass(frozen=True)
class Served:
    """What a serve function started: the inference service, and the layers in front of
    it, innermost first (the last one is the end-to-end figure)."""

    inference_url: str
    layers: tuple[Layer, ...] = ()
    # Further services whose memory is reported, as (name, base URL serving /metrics).
    others: tuple[tuple[str, str], ...] = ()


# (models directory, work directory, environment for the services) -> running services
Serve = Callable[[Path, Path, dict[str, str]], AbstractContextManager[Served]]


@contextlib.contextmanager
def serve_inference(models: Path, work: Path, env: dict[str, str]) -> Iterator[Served]:
    """The inference service alone, with no layer in front."""
    with service_process(models, work / "inference.log", **env) as base:
        yield Served(base)


def measure_cycle(base: str, ids: list[str], image: bytes, cache_size: int) -> CycleResult:
    poster_by_id = {d: Poster(f"{base}/infer?detector_id={d}", image, {"content-type": "image/jpeg"}) for d in ids}
    latencies: list[float] = []
    loads: list[float] = []
    errors: list[str] = []
    for _ in range(2):
        for detector_id in ids:
            start = time.perf_counter()
            error = poster_by_id[detector_id]()
            latencies.append(time.perf_counter() - start)
            if error is not None:
                errors.append(f"{detector_id}: {error}")
            _, ready = get_json(base, "/health/ready")
            loaded = {d["detector_id"]: d for d in ready["loaded"]}  # type: ignore[index]
            if detector_id in loaded:
                loads.append(loaded[detector_id]["load_seconds"])
    for poster in poster_by_id.values():
        poster.close_thread()
    ordered = sorted(latencies)
    return CycleResult(
        detectors=len(ids),
        cache_size=cache_size,
        requests=len(latencies),
        errors=len(errors),
        error_samples=tuple(errors[:3]),
        cold_request_p50_ms=1000 * ordered[len(ordered) // 2],
        cold_request_max_ms=1000 * ordered[-1],
        load_p50_ms=1000 * statistics.median(loads) if loads else float("nan"),
        load_max_ms=1000 * max(loads) if loads else float("nan"),
        evictions=_evictions(base),
    )


def _metrics(base: str) -> str:
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _evictions(base: str) -> int:
    """Total of the service's own eviction counter."""
    pattern = re.compile(r"^intellioptics_inference_cache_evictions_total\{.*\} ([0-9.e+]+)$", re.MULTILINE)
    return int(sum(float(value) for value in pattern.findall(_metrics(base))))


def _resident_mb(base: str) -> float:
    """The service's resident memory, from its own /metrics (``process_resident_memory_bytes``)."""
    found = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", _metrics(base), re.MULTILINE)
    return float(found.group(1)) / 2**20 if found else float("nan")


def run(
    backbone: Path,
    duration_s: float,
    concurrency: tuple[int, ...],
    cycle_detectors: int,
    cache_size: int,
    package: Path | None = None,
    serve: Serve = serve_inference,
) -> BenchReport:
    """``package``: an installed detector directory (``<models>/<detector_id>``, e.g. a
    model trained by ``intellioptics train``) to measure instead of the built one.
    ``serve`` starts the services on the models directory (:func:`serve_inference`:
    the inference service alone)."""
    from intellioptics_inference.settings import InferenceSettings

    settings = InferenceSettings()
    runtime = RuntimeOptions(
        settings.ort_intra_op_threads,
        settings.ort_inter_op_threads,
        settings.ort_execution_mode,
        settings.ort_allow_spinning,
    )
    image = bench_jpeg()
    work = Path(tempfile.mkdtemp(prefix="intellioptics-bench-"))
    try:
        models = work / "models"
        ids = [f"det_cycle{i:02d}" for i in range(cycle_detectors)]
        for detector_id in [DETECTOR, *ids]:
            if package is not None:
                shutil.copytree(package, models / detector_id)
            else:
                write_bench_detector(models, detector_id, backbone)
        # The same sessions the service builds (same fuser, same threads), run directly.
        model = load_detector(models, DETECTOR, runtime, default_fuser()).model
        prepared = model.pre_process(image, DEFAULT_LIMITS)
        on_disk = cast(ModelPackage, model.primary)  # the loader builds from packages on disk
        primary = runtime.session(on_disk.model_bytes(), "primary")
        primary_feed = {primary.get_inputs()[0].name: model.tensor_for(prepared, model.primary.pipeline.input)}
        primary_outputs = [model.primary.pipeline.output]
        described = (
            f"{backbone.name} (EfficientNet-Lite0, 320x320) + classifier head + OODD head"
            if package is None
            else f"{package.name}: {on_disk.metadata.trainer} model on {on_disk.metadata.backbone_id}"
            f"{' + OODD' if model.oodd is not None else ''}"
        )
        report = BenchReport(
            created_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            model=described,
            fused=model.fused,
            image_bytes=len(image),
            settings={
                "INTELLIOPTICS_ORT_INTRA_OP_THREADS": str(settings.ort_intra_op_threads),
                "INTELLIOPTICS_ORT_INTER_OP_THREADS": str(settings.ort_inter_op_threads),
                "INTELLIOPTICS_INFERENCE_WORKERS": str(settings.inference_workers),
                "INTELLIOPTICS_ORT_ALLOW_SPINNING": str(settings.ort_allow_spinning),
            },
            stages_ms=_stages(model, image),
        )
        env = {
            "INTELLIOPTICS_INFERENCE_CACHE_SIZE": str(cache_size),
            "INTELLIOPTICS_INFERENCE_LOAD_TIMEOUT_S": "60",
            "INTELLIOPTICS_LOG_LEVEL": "WARNING",
        }
        with serve(models, work, env) as served:
            poster = Poster(
                f"{served.inference_url}/infer?detector_id={DETECTOR}", image, {"content-type": "image/jpeg"}
            )
            runs: dict[tuple[str, int], Callable[[], str | None]] = {
                (RAW, c): _no_error(model.forward, prepared) for c in concurrency
            }
            runs[(RAW_PRIMARY, 1)] = _no_error(primary.run, primary_outputs, primary_feed)
            runs[(IN_PROCESS, 1)] = _no_error(model.predict, image, DEFAULT_LIMITS)
            for layer in (Layer(HTTP, poster), *served.layers):
                runs.update({(layer.name, c): layer.call for c in concurrency})
            slice_s = min(1.0, duration_s)
            load_before = os.getloadavg()[0]
            results = interleave(runs, rounds=max(1, round(duration_s / slice_s)), slice_s=slice_s)
            report.load_average = (load_before, os.getloadavg()[0])
            layer_names = {layer.name for layer in served.layers}
            report.raw = [r for (name, _), r in results.items() if name == RAW]
            report.raw_primary_only = results[(RAW_PRIMARY, 1)]
            report.in_process = results[(IN_PROCESS, 1)]
            report.http = [r for (name, _), r in results.items() if name == HTTP]
            report.layers = [r for (name, _), r in results.items() if name in layer_names]
            services = (("inference", served.inference_url), *served.others)
            before = {name: _resident_mb(url) for name, url in services}
            if ids:
                report.cycle = measure_cycle(served.inference_url, ids, image, cache_size)
            report.memory_mb = {name: (before[name], _resident_mb(url)) for name, url in services}
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _no_error(function: Callable[..., object], *args: object) -> Callable[[], str | None]:
    """An in-process call in the load generator's shape (an exception ends the bench)."""

    def call() -> None:
        function(*args)

    return call


def _stages(model: DetectorModel, image: bytes) -> dict[str, float]:
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "model": []}
    for _ in range(30):
        answer = model.predict(image, DEFAULT_LIMITS)
        stages["decode"].append(answer.decode_s)
        stages["preprocess"].append(answer.preprocess_s)
        stages["model"].append(answer.model_s)
    return {name: 1000 * statistics.median(values) for name, values in stages.items()}


# --- the report --------------------------------------------------------------------------


def _row(result: LoadResult) -> str:
    return (
        f"| {result.name} | {result.concurrency} | {result.p50_ms:.1f} | {result.p99_ms:.1f} | "
        f"{result.throughput:.1f} | {result.requests} | {result.errors} |"
    )


def to_markdown(report: BenchReport, command: str = "python -m intellioptics_inference.bench") -> str:
    before, after = report.load_average
    lines = [
        SECTION,
        "",
        f"Measured {report.created_at} by `{command}` on {report.machine}; 1-minute load average "
        f"{before:.1f} when the measurements began, {after:.1f} when they ended.",
        f"Model: {report.model}; primary and OODD {'fused into one session (one backbone pass)' if report.fused else 'run as two sessions (two backbone passes)'}.",
        f"Input: one {report.image_bytes // 1024} kB 640x480 JPEG. Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in report.settings.items())
        + ".",
        "Every run is measured in alternating 1 s slices (background load falls on all of them alike); "
        "the HTTP clients are keep-alive `http.client` threads in the bench process, on the same cores.",
        "",
        "| run | concurrency | p50 ms | p99 ms | req/s | requests | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [*report.raw, *([report.raw_primary_only] if report.raw_primary_only else [])]
    rows += [*([report.in_process] if report.in_process else []), *report.http, *report.layers]
    lines += [_row(r) for r in rows]
    raw1 = [r for r in report.raw if r.concurrency == 1]
    chain = [r for r in [*raw1, report.in_process, *report.http, *report.layers] if r and r.concurrency == 1]
    added = ", ".join(f"{b.name} {b.p50_ms - a.p50_ms:+.1f}" for a, b in zip(chain, chain[1:], strict=False))
    lines += [
        "",
        f"What each step adds to the one before it at concurrency 1 (p50 difference, ms): {added}.",
        "",
        "Per-request stages in-process (median ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in report.stages_ms.items())
        + ".",
    ]
    if report.cycle:
        c = report.cycle
        lines += [
            "",
            f"Cache cycle: {c.detectors} detectors requested round-robin twice through a cache of {c.cache_size} "
            f"(every request a cold load): {c.requests} requests, {c.errors} errors, {c.evictions} evictions; cold request p50 "
            f"{c.cold_request_p50_ms:.0f} ms, max {c.cold_request_max_ms:.0f} ms; load (verify + sessions + warm-up) "
            f"p50 {c.load_p50_ms:.0f} ms, max {c.load_max_ms:.0f} ms.",
        ]
    if report.memory_mb:
        full = report.cycle.cache_size if report.cycle else 1
        memory = "; ".join(f"{name} {one:.0f} MB → {many:.0f} MB" for name, (one, many) in report.memory_mb.items())
        lines += [
            "",
            f"Resident memory (each service's `process_resident_memory_bytes`), with the bench model loaded → "
            f"after the cache cycle ({full} models loaded): {memory}.",
        ]
    samples = [f"{r.name} c={r.concurrency}: {e}" for r in [*report.http, *report.layers] for e in r.error_samples]
    samples += [f"cache cycle: {e}" for e in (report.cycle.error_samples if report.cycle else ())]
    if samples:
        lines += ["", "Errors (first of each run): " + "; ".join(samples)]
    lines += ["", "| target | measured | limit | met |", "|---|---|---|---|"]
    for name, (measured, limit, met) in report.targets().items():
        lines.append(f"| {name} | {measured:.1f} | {limit:.1f} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replace (or append) only the ``heading`` section; other sections belong to other parts."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def main(
    argv: list[str] | None = None,
    serve: Serve = serve_inference,
    command: str = "python -m intellioptics_inference.bench",
) -> int:
    """The bench's command line; ``serve`` and ``command`` let a caller put layers in front."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=Path, default=default_backbone())
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--cycle-detectors", type=int, default=20)
    parser.add_argument("--cache-size", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--package", type=Path, default=None, help="an installed detector dir to measure instead")
    args = parser.parse_args(argv)
    if args.package is None and not args.backbone.is_file():
        print(f"backbone {args.backbone} not found: run `make backbone` first", file=sys.stderr)
        return 2
    concurrency = tuple(int(c) for c in args.concurrency.split(","))
    report = run(args.backbone, args.duration, concurrency, args.cycle_detectors, args.cache_size, args.package, serve)
    section = to_markdown(report, command)
    write_section(args.out, section)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    print(section)
    return 0 if all(met for _, _, met in report.targets().values()) else 1


if __name__ == "__main__":
    sys.exit(main())
