"""Anomaly measurements quoted in docs/benchmarks.md (each run stays under ~5 minutes on
2 cores; run one surface at a time with ``nice -n 10``). Prints JSON.

    python -m intellioptics_training.anomaly_bench quality --surface metal [--strength 2] [--n-good 50]
    python -m intellioptics_training.anomaly_bench latency

``quality``: train from ``n-good`` good images of one generated surface, evaluate through
the exported ONNX package on fresh good and defect images with ground-truth masks.
``latency``: one 320 px image through the anomaly primary vs the binary classifier's
primary (same backbone, same thread count), median of repeated runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from intellioptics_training.anomaly import AnomalyOptions, export_anomaly_package, train_anomaly
from intellioptics_training.anomaly_eval import evaluate_anomaly, load_scorer
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import Sample, prepare_good
from intellioptics_training.features import BackboneRunner, make_session
from intellioptics_training.synthetic import generate_anomaly


def bench_quality(surface: str, n_good: int, n_test: int, strength: float, options: AnomalyOptions) -> dict:
    runner = BackboneRunner()
    good = [g.rgb for g in generate_anomaly(surface, n_good, 0, seed=1, strength=strength)]
    test = list(generate_anomaly(surface, n_test, n_test, seed=2, strength=strength))
    trained = train_anomaly(prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT), options, runner=runner)
    with tempfile.TemporaryDirectory() as tmp:
        export_anomaly_package(Path(tmp), "det_bench", trained)
        scorer = load_scorer(Path(tmp), "det_bench")
        report = evaluate_anomaly(
            scorer,
            [g.rgb for g in test if g.label == "NO"],
            [g.rgb for g in test if g.label == "YES"],
            [g.mask for g in test if g.label == "YES"],
        )
    return {
        "surface": surface,
        "strength": strength,
        "n_good_train": n_good,
        "train_seconds": round(trained.train_seconds, 1),
        "bank_patches": trained.bank_patches,
        "bank_mb": round(trained.bank_bytes / 2**20, 2),
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in report.to_dict().items()},
    }


def _round_robin_ms(sessions: list, feed: dict, repeats: int) -> list[float]:
    """Median ms per session, run in turns so that load changes on a shared machine fall
    on all of them alike."""
    for session in sessions:
        for _ in range(3):
            session.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for session, store in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run(None, feed)
            store.append(1000.0 * (time.perf_counter() - start))
    return [statistics.median(store) for store in times]


def bench_latency(options: AnomalyOptions, repeats: int = 30, threads: int = 2) -> dict:
    """Median model-run time of one 320 px image: the anomaly primary vs a binary
    classifier primary built on the same backbone (its cost does not depend on training)."""
    import torch

    from intellioptics_training.heads import (
        PRIMARY_INPUTS,
        PRIMARY_PREFIX,
        PROBABILITIES,
        PrimaryHead,
        merge_with_backbone,
    )

    runner = BackboneRunner()
    good = [g.rgb for g in generate_anomaly("metal", 12, 0, seed=1)]
    trained = train_anomaly(prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT), options, runner=runner)
    torch.manual_seed(0)
    stats = {"feat_s8": (np.zeros(40), np.ones(40)), "feat_s16": (np.zeros(112), np.ones(112))}
    classifier = merge_with_backbone(
        runner.model_bytes, PrimaryHead(2, stats).eval(), PRIMARY_INPUTS, PROBABILITIES, PRIMARY_PREFIX
    )
    feed = {"image": np.random.default_rng(0).normal(size=(1, 3, 320, 320)).astype(np.float32)}
    sessions = [make_session(classifier, threads), make_session(trained.primary_onnx, threads)]
    classifier_ms, anomaly_ms = _round_robin_ms(sessions, feed, repeats)
    return {
        "threads": threads,
        "machine": platform.processor() or platform.machine(),
        "bank_patches": trained.bank_patches,
        "bank_mb": round(trained.bank_bytes / 2**20, 2),
        "classifier_ms": round(classifier_ms, 1),
        "anomaly_ms": round(anomaly_ms, 1),
        "ratio": round(anomaly_ms / classifier_ms, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "latency"])
    parser.add_argument("--surface", default="metal")
    parser.add_argument("--strength", type=float, default=2.0)
    parser.add_argument("--n-good", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=25, help="good and defect test images each")
    parser.add_argument("--bank", type=int, default=AnomalyOptions().max_bank_patches, help="bank patches")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    options = AnomalyOptions(max_bank_patches=args.bank)
    if args.what == "quality":
        result = bench_quality(args.surface, args.n_good, args.n_test, args.strength, options)
    else:
        result = bench_latency(options, args.repeats)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
