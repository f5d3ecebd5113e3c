"""Long measurements (``make bench``): trainers on the hard generated set, and the cost
of one primary vs fused primary+OODD run. Prints JSON; docs/benchmarks.md quotes it.

    python -m intellioptics_training.bench [training|latency|all] [--n-per-class 100]
    python -m intellioptics_training.bench fewlabels [--n-per-class 10,25,50] [--surfaces mixed]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from intellioptics_common.onnx_fuse import fuse_primary_oodd
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import Sample, prepare
from intellioptics_training.evaluate import Scored, compute_report, score_images
from intellioptics_training.features import BackboneRunner, make_session
from intellioptics_training.synthetic import SURFACES, generate
from intellioptics_training.trainer import export_package, train_detector


def _dataset(kind: str, n: int, seed: int, surface: str | None = None):
    samples = [Sample(g.rgb, g.label) for g in generate(kind, n, seed, surface=surface)]
    if kind == "ood":
        return prepare(samples, "multiclass", DEFAULT_INPUT, ("OOD",), require_two_classes=False)
    return prepare(samples, "binary", DEFAULT_INPUT)


def bench_training(n_per_class: int, threshold: float = 0.9, surface: str | None = None) -> dict:
    """Baseline and fast trainer on one generated set: every surface mixed (the default),
    or one ``surface`` throughout, as on a line that inspects one kind of part."""
    runner = BackboneRunner()
    train = _dataset("binary", n_per_class, 1, surface)
    test, ood = _dataset("binary", 100, 2, surface), _dataset("ood", 60, 3)
    results: dict = {"surface": surface or "mixed", "n_per_class": n_per_class}

    started = time.perf_counter()
    maps_train = runner.maps(train.rgb, DEFAULT_INPUT)[3].mean(axis=(2, 3))
    scaler = StandardScaler().fit(maps_train)
    lr = LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced").fit(
        scaler.transform(maps_train), train.labels
    )
    baseline_s = time.perf_counter() - started
    maps_test = runner.maps(test.rgb, DEFAULT_INPUT)[3].mean(axis=(2, 3))
    probs = lr.predict_proba(scaler.transform(maps_test))
    report = compute_report(Scored(probs, None), test.labels, list(test.class_names), threshold)
    results["global_pool_logreg"] = {**_summary(report.to_dict()), "train_seconds": round(baseline_s, 1)}

    trained = train_detector(train, "binary", runner=runner)
    with tempfile.TemporaryDirectory() as tmp:
        export_package(Path(tmp), "det_bench", trained)
        from intellioptics_training.evaluate import load_detector

        detector = load_detector(Path(tmp) / "det_bench")
        report = compute_report(
            score_images(detector, test.rgb),
            test.labels,
            list(test.class_names),
            threshold,
            score_images(detector, ood.rgb),
        )
    results["fast"] = {**_summary(report.to_dict()), "train_seconds": round(trained.train_seconds, 1)}
    return results


def bench_fewlabels(n_per_class: int, threshold: float = 0.9, surface: str | None = None) -> dict:
    """The default trainer on ``n_per_class`` labels, judged on 100 + 100 images it never
    trained on: balanced accuracy, and at ``threshold`` how much it answers and how
    often those answers are right (never below T is the promise of the calibration)."""
    runner = BackboneRunner()
    train = _dataset("binary", n_per_class, 1, surface)
    test, ood = _dataset("binary", 100, 2, surface), _dataset("ood", 60, 3)
    trained = train_detector(train, "binary", runner=runner, threshold=threshold)
    with tempfile.TemporaryDirectory() as tmp:
        export_package(Path(tmp), "det_bench", trained)
        from intellioptics_training.evaluate import load_detector

        detector = load_detector(Path(tmp) / "det_bench")
        report = compute_report(
            score_images(detector, test.rgb),
            test.labels,
            list(test.class_names),
            threshold,
            score_images(detector, ood.rgb),
        ).to_dict()
    confident_accuracy = report["confident_accuracy"]
    calibration = trained.calibration
    return {
        "surface": surface or "mixed",
        "n_per_class": n_per_class,
        "threshold": threshold,
        "unseen": _summary(report),
        "never_below_threshold": confident_accuracy is None or confident_accuracy >= threshold,
        "out_of_fold": {k: round(v, 3) for k, v in trained.validation.items() if k.startswith("oof_")},
        "calibration": None
        if calibration is None
        else {
            "temperature": round(calibration.temperature, 3),
            "confident_n": calibration.confident_n,
            "confident_lower_bound": calibration.confident_lower_bound,
        },
        "train_seconds": round(trained.train_seconds, 1),
    }


def _summary(report: dict) -> dict:
    keys = (
        "balanced_accuracy",
        "accuracy",
        "roc_auc",
        "confident_coverage",
        "confident_accuracy",
        "ece",
        "ood_escalation_rate",
    )
    return {
        k: (round(report[k], 3) if isinstance(report.get(k), float) else report.get(k)) for k in keys if k in report
    }


def bench_latency(repeats: int = 60) -> dict:
    runner = BackboneRunner()
    data = _dataset("binary", 8, 5)
    trained = train_detector(data, "binary", epochs=3, runner=runner)
    fused = fuse_primary_oodd(trained.primary_onnx, trained.oodd_onnx)
    rgb = data.rgb[0]
    from intellioptics_common.preprocessing import to_input_tensor

    x = to_input_tensor(rgb, DEFAULT_INPUT)
    sessions = {
        name: make_session(model, threads=2)
        for name, model in (
            ("primary", trained.primary_onnx),
            ("oodd", trained.oodd_onnx),
            ("fused_primary_oodd", fused),
        )
    }
    for session in sessions.values():
        for _ in range(3):
            session.run(None, {"image": x})
    # Round-robin, so a change in the machine's load falls on every graph alike.
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"image": x})
            samples[name].append((time.perf_counter() - start) * 1000)
    timings: dict = {
        name: {"median_ms": round(float(np.median(v)), 2), "p90_ms": round(float(np.percentile(v, 90)), 2)}
        for name, v in samples.items()
    }
    timings["fused_over_primary"] = round(
        timings["fused_primary_oodd"]["median_ms"] / timings["primary"]["median_ms"], 3
    )
    return timings


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "processor": platform.processor(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m intellioptics_training.bench")
    parser.add_argument("section", nargs="?", default="all", choices=["all", "training", "latency", "fewlabels"])
    parser.add_argument("--n-per-class", default=None, help="training: one count [100]; fewlabels: a list [10,25,50]")
    parser.add_argument(
        "--surfaces",
        default="mixed,leather,fabric,metal",
        help="comma-separated generated sets: 'mixed' (every surface) or one of " + ", ".join(SURFACES),
    )
    args = parser.parse_args(argv)
    out: dict = {"machine": machine(), "load_average": os.getloadavg()}
    if args.section in ("all", "latency"):
        out["latency"] = bench_latency()
    if args.section in ("all", "training"):
        n = int(args.n_per_class or 100)
        out["training"] = [
            bench_training(n, surface=None if name == "mixed" else name) for name in args.surfaces.split(",")
        ]
        out["load_average_after"] = os.getloadavg()
    if args.section == "fewlabels":
        counts = [int(c) for c in (args.n_per_class or "10,25,50").split(",")]
        out["fewlabels"] = [
            bench_fewlabels(n, surface=None if name == "mixed" else name)
            for name in args.surfaces.split(",")
            for n in counts
        ]
        out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
