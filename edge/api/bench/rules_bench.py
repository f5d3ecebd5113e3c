"""The rule stage on a line's day: a third of the frames unusable or empty.

300 frames of 640x480 JPEG from the training library's textured surfaces: a third good
parts, a third defective parts (both must reach the model), and a third the rules should
take: too dark (lens covered, lamp off), blurred (focus lost), or the empty fixture. The
cascade is the one docs/edge-config.md suggests (too_dark, overexposed, blurred,
unchanged against the empty fixture → NO). Reported: the share the rules answered, what
each check caught and missed, false fires on parts, and the stage's CPU and wall time per
frame. Run: ``make bench-rules`` (docs/benchmarks.md, "Rule stage").
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from collections import Counter

import numpy as np
from PIL import Image, ImageFilter
from pydantic import TypeAdapter

from intellioptics_edge.rules import Rule, RuleEngine, analysis_image, laplacian_variance
from intellioptics_training.synthetic import generate

PARTS = 100  # good parts, and as many defective ones: the model's frames
UNUSABLE = {"dark": 34, "blurred": 33, "empty": 33}  # a third of 300: the rules' frames
SIZE = (640, 480)
TUNING_FRAMES = 20  # good frames a line keeps to set its blur threshold


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize(SIZE).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _frames(fixture: np.ndarray) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """The shuffled day's frames, and other good frames to tune the blur threshold on."""
    rng = np.random.default_rng(7)
    parts = list(generate("binary", PARTS + TUNING_FRAMES, seed=21, strength=3))
    good = [g.rgb for g in parts if g.label == "NO"]
    defect = [g.rgb for g in parts if g.label == "YES"][:PARTS]
    tuning = [_jpeg(rgb) for rgb in good[PARTS:]]
    good = good[:PARTS]
    frames: list[tuple[str, bytes]] = [("good", _jpeg(rgb)) for rgb in good]
    frames += [("defect", _jpeg(rgb)) for rgb in defect]
    for rgb in good[: UNUSABLE["dark"]]:
        dim = (rgb.astype(np.float32) * rng.uniform(0.03, 0.08)).astype(np.uint8)
        frames.append(("dark", _jpeg(dim)))
    for rgb in good[-UNUSABLE["blurred"] :]:
        soft = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(4, 8))))
        frames.append(("blurred", _jpeg(np.asarray(soft))))
    for _ in range(UNUSABLE["empty"]):
        noisy = np.clip(fixture.astype(np.int16) + rng.normal(0, 4, fixture.shape), 0, 255).astype(np.uint8)
        frames.append(("empty", _jpeg(noisy)))
    order = rng.permutation(len(frames))
    return [frames[i] for i in order], tuning


EXPECTED = {"dark": "too_dark", "blurred": "blurred", "empty": "unchanged"}


def run(engine: RuleEngine, cascade: list[Rule], frames: list[tuple[str, bytes]], title: str) -> None:
    caught: Counter[str] = Counter()
    kinds = Counter(kind for kind, _ in frames)
    cpu_ms, wall_ms = [], []
    for kind, frame in frames:
        cpu, wall = time.thread_time(), time.perf_counter()
        verdict = engine.evaluate(cascade, frame).verdict
        cpu_ms.append((time.thread_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
        if verdict is not None:
            caught[kind] += 1
            caught[f"{kind}:{verdict.check}"] += 1
    answered = sum(caught[kind] for kind in kinds)
    print(f"\n{title}")
    print("| kind | frames | answered by the rules | by the check meant for it |")
    print("|---|---|---|---|")
    for kind in ("good", "defect", "dark", "blurred", "empty"):
        meant = caught[f"{kind}:{EXPECTED[kind]}"] if kind in EXPECTED else "–"
        print(f"| {kind} | {kinds[kind]} | {caught[kind]} | {meant} |")
    cpu_q, wall_q = statistics.quantiles(cpu_ms, n=20), statistics.quantiles(wall_ms, n=20)
    print(
        f"answered by the rules: {answered}/{len(frames)} ({answered / len(frames):.1%}); "
        f"stage CPU time per frame p50 {statistics.median(cpu_ms):.2f} ms, p95 {cpu_q[18]:.2f} ms; "
        f"wall p50 {statistics.median(wall_ms):.2f} ms, p95 {wall_q[18]:.2f} ms"
    )


def cascade_with(fixture_path: str, blur_threshold: float) -> list[Rule]:
    return TypeAdapter(list[Rule]).validate_python(
        [
            {"check": "too_dark"},
            {"check": "overexposed"},
            {"check": "blurred", "threshold": blur_threshold},
            {"check": "unchanged", "reference": fixture_path, "action": "answer", "label": "NO"},
        ]
    )


def main() -> int:
    fixture_rgb = next(iter(generate("binary", 1, seed=99, strength=0))).rgb
    fixture_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rules_bench_empty_fixture.png")
    Image.fromarray(fixture_rgb).resize(SIZE).save(fixture_path)
    fixture = np.asarray(Image.open(fixture_path).convert("RGB"))
    frames, tuning = _frames(fixture)
    engine = RuleEngine()
    print(
        f"Rule stage: {len(frames)} frames of 640x480 JPEG, {platform.machine()}, {os.cpu_count()} CPU, "
        f"1-min load {os.getloadavg()[0]:.1f}"
    )
    run(engine, cascade_with(fixture_path, 30.0), frames, "Default blur threshold (30):")
    # The line's own scale: half the sharpest-looking good frame's lowest variance.
    lowest = min(laplacian_variance(analysis_image(frame)) for frame in tuning)
    tuned = round(lowest / 2, 1)
    run(
        engine,
        cascade_with(fixture_path, tuned),
        frames,
        f"Blur threshold {tuned}: half the lowest Laplacian variance of {len(tuning)} other good frames:",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
