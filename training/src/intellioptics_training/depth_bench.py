"""RGB + depth bench: the fused model against the same pairs without depth.

``python -m intellioptics_training.depth_bench [--n-per-class 60] [--test-per-class 60]``
generates a development set where the defect (a 0.5-1.5 mm dent) shows only in depth
(:mod:`intellioptics_training.synthetic_depth`), trains the fused RGB + depth model and the
RGB-only fast trainer on the same training pairs, and scores both on pairs of another seed
that neither saw. It prints one JSON object: balanced accuracy, and at the confidence
threshold the share answered and how often those answers are right. The RGB-only row is
the fairness check: near 0.5, the colour images alone do not give the defect away.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from intellioptics_common.depth import encode_depth_png
from intellioptics_training.data import Dataset
from intellioptics_training.depth import DepthDataset, DepthSample, prepare_depth, train_depth_detector
from intellioptics_training.evaluate import LoadedDetector, Scored, load_detector, score_images
from intellioptics_training.synthetic import encode_png
from intellioptics_training.synthetic_depth import DepthPair, generate_pairs
from intellioptics_training.trainer import TrainedModels, export_package, train_detector


def _samples(pairs: list[DepthPair]) -> list[DepthSample]:
    return [
        DepthSample(encode_png(p.rgb), encode_depth_png(p.depth_mm), p.label, f"{p.label}_{i}")
        for i, p in enumerate(pairs)
    ]


def _report(scored: Scored, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    correct = scored.probabilities.argmax(axis=1) == labels
    recalls = [float(correct[labels == c].mean()) for c in np.unique(labels)]
    answered = scored.adjusted() >= threshold  # OODD-adjusted, as the edge compares it
    return {
        "balanced_accuracy": round(float(np.mean(recalls)), 4),
        "answered_share": round(float(answered.mean()), 4),
        "answered_accuracy": round(float(correct[answered].mean()), 4) if answered.any() else None,
    }


def _loaded(trained: TrainedModels, models_dir: Path, detector_id: str) -> LoadedDetector:
    """Scored as it will be served: exported as a package, then read back."""
    export_package(models_dir, detector_id, trained, metrics=trained.validation)
    return load_detector(models_dir, detector_id)


def run(n_per_class: int, test_per_class: int, threshold: float, seed: int) -> dict[str, Any]:
    train_pairs = list(generate_pairs(n_per_class, seed))
    test_pairs = list(generate_pairs(test_per_class, seed + 1000))
    train_set = prepare_depth(_samples(train_pairs), "binary")
    test_set = prepare_depth(_samples(test_pairs), "binary")
    started = time.perf_counter()
    fused = train_depth_detector(train_set, "binary", threshold=threshold, seed=seed)
    fused_s = time.perf_counter() - started
    started = time.perf_counter()
    rgb_only = train_detector(_rgb_dataset(train_set), "binary", threshold=threshold, seed=seed)
    rgb_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as models:
        scored_fused = score_images(_loaded(fused, Path(models), "det_depth"), test_set.rgb, depths=test_set.depth)
        scored_rgb = score_images(_loaded(rgb_only, Path(models), "det_rgb"), test_set.rgb)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, load average {os.getloadavg()[0]:.1f}",
        "train_pairs_per_class": n_per_class,
        "test_pairs_per_class": test_per_class,
        "threshold": threshold,
        "rgb_plus_depth": {
            **_report(scored_fused, test_set.labels, threshold),
            "train_s": round(fused_s, 1),
            # Out of fold on the training pairs: the mix chosen, and what calibration saw.
            "out_of_fold": {key: round(value, 4) for key, value in fused.validation.items()},
        },
        "rgb_only": {
            **_report(scored_rgb, test_set.labels, threshold),
            "train_s": round(rgb_s, 1),
        },
    }


def _rgb_dataset(data: DepthDataset) -> Dataset:
    """The same training pairs, colour only."""
    return Dataset(list(data.rgb), data.labels, data.class_names, [f"pair_{i}" for i in range(len(data.labels))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=60)
    parser.add_argument("--test-per-class", type=int, default=60)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.n_per_class, args.test_per_class, args.threshold, args.seed), indent=2))


if __name__ == "__main__":
    main()
