"""Box and count measurements quoted in docs/benchmarks.md "Boxes and counts". Prints JSON.

    python -m intellioptics_training.detection_bench quality [--surface metal] [--strength 2] [--n-train 80]
    python -m intellioptics_training.detection_bench latency

``quality``: write a generated set (0-3 defects per image, true boxes) in the YOLO
layout, train through the same path as ``intellioptics train --mode bounding_box``, and
evaluate the exported package on images of another seed. ``latency``: one 320 px image
through the detection primary vs a binary classifier primary on the same backbone,
median of interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from intellioptics_training.anomaly_bench import _round_robin_ms
from intellioptics_training.detection import (
    DetectionOptions,
    evaluate_detection,
    export_detection_package,
    load_detection_scorer,
    read_yolo,
    train_detection,
)
from intellioptics_training.features import BackboneRunner, make_session
from intellioptics_training.synthetic import write_detection_dataset


def bench_quality(surface: str | None, n_train: int, n_test: int, strength: float, options: DetectionOptions) -> dict:
    runner = BackboneRunner()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_detection_dataset(root / "train", n_train, seed=1, strength=strength, surface=surface)
        write_detection_dataset(root / "test", n_test, seed=2, strength=strength, surface=surface)
        trained = train_detection(read_yolo(root / "train"), "count", options, runner=runner)
        export_detection_package(root / "pkg", "det_bench", trained)
        report = evaluate_detection(load_detection_scorer(root / "pkg"), read_yolo(root / "test"), options.threshold)
    return {
        "surface": surface or "mixed",
        "strength": strength,
        "n_train": n_train,
        "train_objects": trained.training_objects,
        "train_seconds": round(trained.train_seconds, 1),
        "views": list(options.views),
        "served": "refit" if options.refit else f"mean of {options.folds} fold heads",
        "load_1min": round(os.getloadavg()[0], 1),
        "out_of_fold": trained.out_of_fold,
        "test": report,
    }


def bench_latency(repeats: int = 30, threads: int = 2) -> dict:
    """Median model-run time of one 320 px image: the detection primary as served (the
    mean of the fold heads) vs a binary classifier primary on the same backbone (neither
    cost depends on training)."""
    import torch

    from intellioptics_common.detection import OUTPUTS
    from intellioptics_training.detection import DETECTION_PREFIX, DetectionHead, HeadEnsemble
    from intellioptics_training.heads import (
        PRIMARY_INPUTS,
        PRIMARY_PREFIX,
        PROBABILITIES,
        PrimaryHead,
        merge_outputs_with_backbone,
        merge_with_backbone,
    )

    runner = BackboneRunner()
    torch.manual_seed(0)
    stats = {"feat_s8": (np.zeros(40), np.ones(40)), "feat_s16": (np.zeros(112), np.ones(112))}
    classifier = merge_with_backbone(
        runner.model_bytes, PrimaryHead(2, stats).eval(), PRIMARY_INPUTS, PROBABILITIES, PRIMARY_PREFIX
    )
    options = DetectionOptions()
    head = HeadEnsemble([DetectionHead(1, stats, options.hidden) for _ in range(options.folds)]).eval()
    detector = merge_outputs_with_backbone(runner.model_bytes, head, OUTPUTS, DETECTION_PREFIX, spatial=OUTPUTS)
    feed = {"image": np.random.default_rng(0).normal(size=(1, 3, 320, 320)).astype(np.float32)}
    sessions = [make_session(classifier, threads), make_session(detector, threads)]
    classifier_ms, detection_ms = _round_robin_ms(sessions, feed, repeats)
    return {
        "threads": threads,
        "machine": platform.processor() or platform.machine(),
        "load_1min": round(os.getloadavg()[0], 1),
        "classifier_ms": round(classifier_ms, 1),
        "detection_ms": round(detection_ms, 1),
        "ratio": round(detection_ms / classifier_ms, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "latency"])
    parser.add_argument("--surface", default=None, help="one surface for every image (default: mixed)")
    parser.add_argument("--strength", type=float, default=2.0)
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-test", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=DetectionOptions().epochs)
    parser.add_argument("--views", default=",".join(DetectionOptions().views), help="training views, comma-separated")
    parser.add_argument("--refit", action="store_true", help="serve one head refitted on every image")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.what == "quality":
        options = DetectionOptions(epochs=args.epochs, refit=args.refit, views=tuple(args.views.split(",")))
        result = bench_quality(args.surface, args.n_train, args.n_test, args.strength, options)
    else:
        result = bench_latency(args.repeats)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
