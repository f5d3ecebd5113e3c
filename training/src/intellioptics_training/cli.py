"""The ``intellioptics`` command line: for people (train, evaluate, predict, data, backbone,
and training jobs on the cloud).

Every command fails with a one-line message and a non-zero exit on bad input; long
work shows a progress bar on stderr so ``--json`` output on stdout stays parseable.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, TypeVar
from urllib.parse import quote

import click

from intellioptics_common.errors import IntelliOpticsError
from intellioptics_training.config import data_dir

if TYPE_CHECKING:
    from intellioptics_common.anomaly import SeverityCuts
    from intellioptics_training.data import Dataset
    from intellioptics_training.depth import DepthDataset


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """IntelliOptics: train, evaluate and try visual-inspection models."""


@main.group()
def backbone() -> None:
    """The shared feature extractor (EfficientNet-Lite0, ImageNet weights)."""


@backbone.command("export")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for backbone.onnx and backbone.json [default: $INTELLIOPTICS_DATA_DIR/backbones/efficientnet_lite0]",
)
@click.option("--force", is_flag=True, help="Export again even when a verified export exists.")
def backbone_export(out_dir: Path | None, force: bool) -> None:
    """Export the backbone to ONNX (idempotent)."""
    from intellioptics_training.backbone import BACKBONE_FILE, export_backbone

    target = out_dir or data_dir() / "backbones" / "efficientnet_lite0"
    info = export_backbone(target, force=force)
    click.echo(f"{target / BACKBONE_FILE}  id={info.id}  sha256={info.sha256[:16]}…  outputs={','.join(info.outputs)}")


@main.group()
def dataset() -> None:
    """Generated development data."""


@dataset.command("generate")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--kind", type=click.Choice(["binary", "multiclass", "ood", "anomaly", "depth", "detection"]), default="binary"
)
@click.option("--n-per-class", type=click.IntRange(1, 100_000), default=100)
@click.option("--seed", type=int, default=0)
@click.option("--strength", type=click.FloatRange(0.1, 10.0), default=1.0, help="Defect contrast multiplier.")
@click.option(
    "--surface",
    default=None,
    help="The one surface of every image, as on a line that inspects one kind of part (default: metal for the "
    "anomaly and detection kinds; binary and multiclass: each image draws its own).",
)
def dataset_generate(out: Path, kind: str, n_per_class: int, seed: int, strength: float, surface: str | None) -> None:
    """Write textured surfaces with subtle defects (or unrelated photos) as OUT/<label>/*.png
    (anomaly kind: one surface, plus OUT/masks/<stem>.png for every defect image; depth kind:
    OUT/<label>/<id>_rgb.png + <id>_depth.png pairs; detection kind: N images with 0-3
    defects each in the YOLO layout, OUT/images/*.png + OUT/labels/*.txt + OUT/data.yaml)."""
    if kind == "depth":
        from intellioptics_training.synthetic_depth import write_pairs

        count = write_pairs(out, n_per_class, seed)
        click.echo(f"wrote {count} RGB + depth pairs to {out}")
        return
    from intellioptics_training.synthetic import (
        SURFACES,
        write_anomaly_dataset,
        write_dataset,
        write_detection_dataset,
    )

    if kind in ("anomaly", "detection"):
        surface = surface or "metal"
    if surface is not None and surface not in SURFACES:
        _fail(f"--surface must be one of {', '.join(SURFACES)}, not {surface!r}")
    if kind == "anomaly":
        assert surface is not None
        count = write_anomaly_dataset(out, surface, n_per_class, n_per_class, seed, strength)
    elif kind == "detection":
        assert surface is not None
        count = write_detection_dataset(out, n_per_class, seed, strength, surface)
    else:
        count = write_dataset(out, kind, n_per_class, seed, strength, surface)
    click.echo(f"wrote {count} images to {out}")


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--mode", type=click.Choice(["binary", "multiclass", "anomaly", "bounding_box", "count"]), default="binary"
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--detector-id", default="det_local")
@click.option("--trainer", type=click.Choice(["fast", "auto", "finetune"]), default="fast")
@click.option("--classes", default=None, help="Comma-separated class names (multiclass; boxes: YOLO class 0, 1...).")
@click.option(
    "--max-count",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="Count and box modes: the largest count answered (the SDK's max_count / max_num_bboxes).",
)
@click.option("--epochs", type=click.IntRange(1, 1000), default=None, help="[default: fast 25, finetune 8]")
@click.option("--depth", "with_depth", is_flag=True, help="DATA holds <id>_rgb.png|jpg + <id>_depth.npy|png pairs.")
@click.option(
    "--false-alarm-rate",
    type=click.FloatRange(0.001, 0.2),
    default=0.01,
    show_default=True,
    help="Anomaly mode: the false-alarm rate on good images that sets the threshold.",
)
@click.option(
    "--severity-cuts",
    default="0.3,0.5,0.8",
    show_default=True,
    help="Anomaly mode: the scores where Potential, Moderate and Critical begin (three rising numbers in (0, 1)).",
)
@click.option("--allow-mixed-sizes", is_flag=True, help="Anomaly mode: stretch good images of different sizes.")
@click.option(
    "--threshold",
    type=click.FloatRange(0.5, 1.0, max_open=True),
    default=0.9,
    show_default=True,
    help="The detector's confidence threshold the model is calibrated for.",
)
@click.option("--json", "as_json", is_flag=True)
def train(
    data: Path,
    mode: str,
    out_dir: Path,
    detector_id: str,
    trainer: str,
    classes: str | None,
    epochs: int,
    with_depth: bool,
    false_alarm_rate: float,
    allow_mixed_sizes: bool,
    threshold: float,
    as_json: bool,
    max_count: int = 10,
    severity_cuts: str = "0.3,0.5,0.8",
) -> None:
    """Train primary + OODD models on DATA/<label>/* and write a new package version.

    With --mode anomaly, DATA holds good images only (DATA/*.jpg|png, DATA/NO/ or
    DATA/good/) and the model flags whatever does not look like them. With --mode
    bounding_box or count, DATA is in the YOLO layout: DATA/images/*.jpg and
    DATA/labels/<stem>.txt (`class cx cy w h` per line, fractions; empty = no object)."""
    if mode in ("bounding_box", "count"):
        _train_detection(data, mode, out_dir, detector_id, classes, max_count, threshold, epochs, as_json)
        return
    if mode == "anomaly":
        cuts = _severity_cuts(severity_cuts)
        _train_anomaly(data, out_dir, detector_id, false_alarm_rate, cuts, allow_mixed_sizes, as_json)
        return
    from tqdm import tqdm

    from intellioptics_training.data import read_image_folder
    from intellioptics_training.trainer import Progress, export_package, train_detector

    bars: dict[str, tqdm] = {}

    def on_progress(event: Progress) -> None:
        bar = bars.get(event.stage)
        if bar is None:
            bar = bars[event.stage] = tqdm(total=event.total, desc=event.stage, file=sys.stderr, leave=False)
        bar.n = event.step
        if event.metrics:
            bar.set_postfix({k: round(v, 3) for k, v in event.metrics.items()}, refresh=False)
        bar.refresh()

    try:
        class_names = tuple(c.strip() for c in classes.split(",")) if classes else None
        if with_depth:
            from intellioptics_training.depth import prepare_depth, read_depth_folder, train_depth_detector

            pairs, unpaired = read_depth_folder(data)
            if unpaired:
                click.echo(f"skipped {unpaired} image(s) without a depth map", err=True)
            depth_data = prepare_depth(pairs, mode, class_names)
            trained = train_depth_detector(
                depth_data, mode, threshold=threshold, progress_callback=on_progress, **_epochs(epochs)
            )
        else:
            samples = read_image_folder(data)
            trained = train_detector(
                samples,
                mode,
                class_names,
                trainer=trainer,
                epochs=epochs,
                threshold=threshold,
                progress_callback=on_progress,
            )
        paths = export_package(out_dir, detector_id, trained, metrics=trained.validation)
    except IntelliOpticsError as exc:
        _fail(exc.public_message)
    finally:
        for bar in bars.values():
            bar.close()
    summary = {
        "detector_id": detector_id,
        "primary": str(paths["primary"]),
        "oodd": str(paths["oodd"]),
        "class_counts": trained.class_counts,
        "skipped_unreadable": trained.skipped,
        "train_seconds": round(trained.train_seconds, 2),
        "validation": trained.validation,
        "calibration": trained.calibration.to_dict() if trained.calibration else None,
    }
    if as_json:
        _print_json(summary)
    else:
        click.echo(f"trained {detector_id} in {summary['train_seconds']} s on {trained.class_counts}")
        if trained.skipped:
            click.echo(f"skipped {trained.skipped} unreadable image(s)")
        click.echo(f"validation: {json.dumps(trained.validation)}")
        click.echo(f"primary: {paths['primary']}\noodd:    {paths['oodd']}")


@main.command()
@click.argument("pkg", type=click.Path(path_type=Path))
@click.argument("test", type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.9)
@click.option("--ood", "ood_dir", type=click.Path(path_type=Path), default=None, help="Folder of unrelated images.")
@click.option("--detector-id", default=None)
@click.option("--depth", "with_depth", is_flag=True, help="TEST holds <id>_rgb + <id>_depth pairs.")
@click.option(
    "--masks",
    "masks_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Anomaly models: defect masks (white = defect), for pixel AUROC: named like the defect images "
    "(<stem>.png or MVTec's <stem>_mask.png; PNG, BMP, JPEG, TIFF), in subfolders too. Default: TEST/masks "
    "or TEST/ground_truth when present.",
)
@click.option("--json", "as_json", is_flag=True)
def evaluate(
    pkg: Path,
    test: Path,
    threshold: float,
    ood_dir: Path | None,
    detector_id: str | None,
    with_depth: bool,
    masks_dir: Path | None,
    as_json: bool,
) -> None:
    """Evaluate the latest package version on TEST/<label>/* (anomaly models: TEST/{NO,YES},
    or MVTec AD's TEST/good + one folder per defect kind; count and box models: TEST/images
    + TEST/labels in the YOLO layout)."""
    from intellioptics_training.data import Sample, prepare, read_image_folder
    from intellioptics_training.evaluate import compute_report, load_detector, score_images

    try:
        kind = _model_kind(pkg, detector_id)
        if kind == "detection":
            _evaluate_detection(pkg, test, detector_id, threshold, as_json)
            return
        if kind == "anomaly":
            _evaluate_anomaly(pkg, test, masks_dir, detector_id, as_json)
            return
        detector = load_detector(pkg, detector_id)
        pipeline = detector.primary.pipeline
        mode = "binary" if pipeline.mode == "BINARY" else "multiclass"
        spec = pipeline.input
        depths = None
        test_data: Dataset | DepthDataset
        if with_depth:
            from intellioptics_training.depth import prepare_depth, read_depth_folder

            pairs, _ = read_depth_folder(test)
            kwargs = {"spec": pipeline.depth} if pipeline.depth else {}
            test_data = prepare_depth(pairs, mode, pipeline.class_names, require_two_classes=False, **kwargs)
            depths = test_data.depth
        else:
            test_data = prepare(read_image_folder(test), mode, spec, pipeline.class_names, require_two_classes=False)
        if not test_data.rgb:
            _fail(f"no readable test images in {test}")
        scored = score_images(detector, test_data.rgb, depths=depths)
        ood = None
        if ood_dir is not None:
            ood_samples = [Sample(s.image, "OOD", s.name) for s in _read_flat_or_folder(ood_dir)]
            ood_data = prepare(ood_samples, "multiclass", spec, ("OOD",), require_two_classes=False)
            if not ood_data.rgb:
                _fail(f"no readable images in {ood_dir}")
            ood = score_images(detector, ood_data.rgb)
        report = compute_report(scored, test_data.labels, list(pipeline.class_names), threshold, ood)
    except IntelliOpticsError as exc:
        _fail(exc.public_message)
    result = {**report.to_dict(), "skipped": test_data.skipped}
    if as_json:
        _print_json(result)
    else:
        for key in ("n", "accuracy", "balanced_accuracy", "confident_coverage", "confident_accuracy", "roc_auc", "ece"):
            click.echo(f"{key:20s} {result.get(key)}")
        if "ood_escalation_rate" in result:
            click.echo(f"{'ood_escalation_rate':20s} {result['ood_escalation_rate']}")
        click.echo(f"confusion_matrix     {result['confusion_matrix']} ({', '.join(result['class_names'])})")


@main.command()
@click.argument("pkg", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--detector-id", default=None)
@click.option("--depth", "with_depth", is_flag=True, help="Read <id>_depth.npy|png beside each <id>_rgb image.")
@click.option(
    "--maps",
    "maps_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Anomaly models: write DIR/<stem>.npy, the float32 anomaly map at the image's size.",
)
@click.option(
    "--overlays",
    "overlays_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Anomaly models: write DIR/<stem>_heatmap.png and DIR/<stem>_boxes.png (box models: the boxes).",
)
@click.option("--json", "as_json", is_flag=True)
def predict(
    pkg: Path,
    images: tuple[Path, ...],
    detector_id: str | None,
    with_depth: bool,
    maps_dir: Path | None,
    overlays_dir: Path | None,
    as_json: bool,
) -> None:
    """Print label, (OODD-adjusted) confidence and raw confidences for each image
    (anomaly models: one JSON line per image with anomaly_score, severity and rois;
    count and box models: one JSON line per image with label, count, confidence and rois)."""
    from intellioptics_common.confidence import predict_from_probabilities
    from intellioptics_common.imaging import decode_image
    from intellioptics_training.evaluate import load_detector, score_images

    try:
        kind = _model_kind(pkg, detector_id)
        if kind == "detection":
            _predict_detection(pkg, images, detector_id, overlays_dir)
            return
        if kind == "anomaly":
            _predict_anomaly(pkg, images, detector_id, maps_dir, overlays_dir)
            return
        detector = load_detector(pkg, detector_id)
        names = detector.primary.pipeline.class_names
        for path in images:
            try:
                rgb = decode_image(path.read_bytes()).rgb
                depths = _depth_beside(path, rgb, detector.primary.pipeline.depth) if with_depth else None
            except (IntelliOpticsError, OSError) as exc:
                click.echo(f"{path}: unreadable ({getattr(exc, 'public_message', exc)})", err=True)
                continue
            scored = score_images(detector, [rgb], depths=depths)
            in_domain = None if scored.in_domain is None else float(scored.in_domain[0])
            pred = predict_from_probabilities(scored.probabilities[0].tolist(), names, in_domain)
            raw = {name: round(float(p), 4) for name, p in zip(names, scored.probabilities[0], strict=True)}
            if as_json:
                _print_json(
                    {
                        "image": str(path),
                        "label": pred.label,
                        "confidence": pred.confidence,
                        "raw": raw,
                        "in_domain": in_domain,
                    }
                )
            else:
                click.echo(f"{path}: {pred.label} confidence={pred.confidence:.4f} raw={raw} in_domain={in_domain}")
    except IntelliOpticsError as exc:
        _fail(exc.public_message)


@contextlib.contextmanager
def _stage_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback ``(stage, step, total)`` drawing one bar per stage on stderr."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, step: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.n = step
        bar.refresh()

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.close()


def _severity_cuts(text: str) -> SeverityCuts:
    """``--severity-cuts 0.3,0.5,0.8`` as cut points, or a usage error that says what is wrong."""
    from intellioptics_common.anomaly import SeverityCuts

    try:
        values = [float(part) for part in text.split(",")]
        if len(values) != 3:
            raise ValueError("give exactly three numbers")
        return SeverityCuts(*values)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc} (for example 0.3,0.5,0.8)", param_hint="--severity-cuts") from None


def _train_anomaly(
    data: Path,
    out_dir: Path,
    detector_id: str,
    false_alarm_rate: float,
    cuts: SeverityCuts,
    allow_mixed_sizes: bool,
    as_json: bool,
) -> None:

    from intellioptics_training.anomaly import AnomalyOptions, export_anomaly_package, train_anomaly
    from intellioptics_training.backbone import DEFAULT_INPUT
    from intellioptics_training.data import prepare_good, read_good_images

    try:
        with _stage_bars() as on_progress:
            good = prepare_good(read_good_images(data), DEFAULT_INPUT, allow_mixed_sizes=allow_mixed_sizes)
            options = AnomalyOptions(target_false_alarm=false_alarm_rate, severity=cuts)
            trained = train_anomaly(good, options, progress=on_progress)
            paths = export_anomaly_package(out_dir, detector_id, trained)
    except IntelliOpticsError as exc:
        _fail(exc.public_message)
    summary = {
        "detector_id": detector_id,
        "model_kind": "anomaly",
        "primary": str(paths["primary"]),
        "oodd": str(paths["oodd"]),
        "good_images": trained.training_set_size,
        "skipped_unreadable": trained.skipped,
        "bank_patches": trained.bank_patches,
        "bank_bytes": trained.bank_bytes,
        "raw_threshold": round(trained.spec.raw_threshold, 4),
        "target_false_alarm": trained.spec.target_false_alarm,
        "severity_cuts": asdict(trained.spec.severity_cuts),
        "train_seconds": round(trained.train_seconds, 2),
        "validation": trained.validation,
    }
    if as_json:
        _print_json(summary)
    else:
        click.echo(
            f"trained anomaly detector {detector_id} in {summary['train_seconds']} s on {trained.training_set_size} good images"
        )
        if trained.skipped:
            click.echo(f"skipped {trained.skipped} unreadable image(s)")
        click.echo(f"bank: {trained.bank_patches} patches, {trained.bank_bytes / 2**20:.1f} MB")
        click.echo(f"primary: {paths['primary']}\noodd:    {paths['oodd']}")


def _model_kind(pkg: Path, detector_id: str | None) -> str:
    from intellioptics_training.evaluate import load_detector

    return load_detector(pkg, detector_id).primary.pipeline.model_kind


def _train_detection(
    data: Path,
    mode: str,
    out_dir: Path,
    detector_id: str,
    classes: str | None,
    max_count: int,
    threshold: float,
    epochs: int | None,
    as_json: bool,
) -> None:

    from intellioptics_training.detection import DetectionOptions, export_detection_package, read_yolo, train_detection

    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    try:
        with _stage_bars() as on_progress:
            options = DetectionOptions(max_count=max_count, threshold=threshold, **_epochs(epochs))
            boxes = read_yolo(data, class_names=names)
            trained = train_detection(boxes, mode, options, progress=on_progress)
            paths = export_detection_package(out_dir, detector_id, trained)
    except IntelliOpticsError as exc:
        _fail(exc.public_message)
    summary = {
        "detector_id": detector_id,
        "model_kind": "detection",
        "mode": trained.mode,
        "class_names": list(trained.class_names),
        "primary": str(paths["primary"]),
        "oodd": str(paths["oodd"]),
        "images": trained.training_images,
        "objects": trained.training_objects,
        "skipped_unreadable": trained.skipped,
        "images_without_label_file": boxes.missing_labels,
        "box_threshold": round(trained.spec.box_threshold, 4),
        "train_seconds": round(trained.train_seconds, 2),
        "out_of_fold": trained.out_of_fold,
    }
    if as_json:
        _print_json(summary)
        return
    click.echo(
        f"trained {trained.mode} detector {detector_id} in {summary['train_seconds']} s"
        f" on {trained.training_images} images with {trained.training_objects} boxes"
    )
    if trained.skipped or boxes.missing_labels:
        click.echo(f"skipped {trained.skipped} unreadable image(s); {boxes.missing_labels} without a label file")
    for key, value in trained.out_of_fold.items():
        click.echo(f"out of fold: {key:30s} {value}")
    click.echo(f"primary: {paths['primary']}\noodd:    {paths['oodd']}")


def _evaluate_detection(pkg: Path, test: Path, detector_id: str | None, threshold: float, as_json: bool) -> None:
    from intellioptics_training.detection import evaluate_detection, load_detection_scorer, read_yolo

    scorer = load_detection_scorer(pkg, detector_id)
    result = evaluate_detection(scorer, read_yolo(test, class_names=scorer.pipeline.class_names), threshold)
    if as_json:
        _print_json(result)
    else:
        for key, value in result.items():
            click.echo(f"{key:30s} {value}")


def _decoded(images: tuple[Path, ...], failed: list[Path]) -> Iterator[tuple[Path, Any]]:
    """(path, HxWx3 array) per readable image; an unreadable one is named on stderr and
    added to ``failed``."""
    from intellioptics_common.imaging import decode_image

    for path in images:
        try:
            rgb = decode_image(path.read_bytes()).rgb
        except (IntelliOpticsError, OSError) as exc:
            click.echo(f"{path}: unreadable ({getattr(exc, 'public_message', exc)})", err=True)
            failed.append(path)
            continue
        yield path, rgb


def _predict_detection(pkg: Path, images: tuple[Path, ...], detector_id: str | None, overlays_dir: Path | None) -> None:
    import numpy as np

    from intellioptics_common.anomaly import render_overlay
    from intellioptics_training.detection import load_detection_scorer, to_json

    scorer = load_detection_scorer(pkg, detector_id)
    if overlays_dir is not None:
        overlays_dir.mkdir(parents=True, exist_ok=True)
    failed: list[Path] = []
    for path, rgb in _decoded(images, failed):
        result = scorer.result(rgb)
        if overlays_dir is not None:
            png = render_overlay(rgb, np.zeros((1, 1), dtype=np.float32), result.boxes, "boxes")
            (overlays_dir / f"{path.stem}_boxes.png").write_bytes(png)
        _print_json(to_json(result, str(path)))
    if failed:
        _fail(f"{len(failed)} of {len(images)} image(s) were unreadable")


def _evaluate_anomaly(pkg: Path, test: Path, masks_dir: Path | None, detector_id: str | None, as_json: bool) -> None:
    from intellioptics_common.imaging import decode_image
    from intellioptics_training.anomaly_eval import evaluate_anomaly, load_scorer
    from intellioptics_training.errors import DatasetError

    scorer = load_scorer(pkg, detector_id)
    if not test.is_dir():
        raise DatasetError(f"{test} is not a directory")
    images: dict[str, list] = {"NO": [], "YES": []}
    defects: list[Path] = []  # each defect image's path under its class folder, for its mask
    skipped = 0
    for label, folders in anomaly_test_folders(test).items():
        for folder in folders:
            for path in _images_under(folder):
                try:
                    images[label].append(decode_image(path.read_bytes()).rgb)
                except (IntelliOpticsError, OSError):
                    skipped += 1
                    continue
                if label == "YES":
                    defects.append(path.relative_to(folder.parent if folder.name != "YES" else folder))
    if not images["NO"] and not images["YES"]:
        raise DatasetError(
            f"no readable test images in {test}: put good images in NO/ (or good/) and defect images in YES/ "
            f"(or one folder per defect kind) ({skipped} unreadable skipped)"
        )
    masks = None
    if masks_dir is None:  # the layouts `dataset generate --kind anomaly` and MVTec AD write
        masks_dir = next((test / name for name in ("masks", "ground_truth") if (test / name).is_dir()), None)
    if masks_dir is not None:
        index = MaskIndex(masks_dir)
        masks = [index.read(relative) for relative in defects]
    report = evaluate_anomaly(scorer, images["NO"], images["YES"], masks)
    report.skipped = skipped
    result = report.to_dict()
    if as_json:
        _print_json(result)
    else:
        for key, value in result.items():
            click.echo(f"{key:18s} {value}")


# Folders of a test set that are not image classes.
_NOT_CLASSES = {"masks", "ground_truth", "gt"}


def anomaly_test_folders(test: Path) -> dict[str, list[Path]]:
    """The good and defect folders of an anomaly test set: ``NO/`` (or ``good/``) and
    ``YES/``; without a ``YES/``, every other folder is a kind of defect (MVTec AD's
    ``test/good``, ``test/crack``, ``test/hole``). Images are read recursively."""
    good = [test / name for name in ("NO", "good") if (test / name).is_dir()]
    if (test / "YES").is_dir():
        return {"NO": good, "YES": [test / "YES"]}
    others = sorted(
        folder
        for folder in test.iterdir()
        if folder.is_dir() and folder.name not in {"NO", "good", *_NOT_CLASSES} and not folder.name.startswith(".")
    )
    return {"NO": good, "YES": others}


def _images_under(folder: Path) -> list[Path]:
    from intellioptics_training.data import IMAGE_SUFFIXES

    return sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


_MASK_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


class MaskIndex:
    """The defect masks under a folder (white = defect), found for an image by its path
    below its class folder or by its name alone: ``<stem>.png``, ``<stem>_mask.png``
    (MVTec AD), any of PNG, BMP, JPEG, TIFF or WebP, in subfolders too."""

    def __init__(self, root: Path) -> None:
        self.by_path: dict[str, Path] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for path in sorted(root.rglob("*")):
            if not (path.is_file() and path.suffix.lower() in _MASK_SUFFIXES):
                continue
            stem = path.stem.removesuffix("_mask")
            relative = path.relative_to(root).with_suffix("")
            self.by_path[str(relative.parent / stem)] = path
            self.by_stem.setdefault(stem, []).append(path)

    def find(self, image: Path) -> Path | None:
        """``image``: its path below the test set's class folder (``crack/000.png``)."""
        key = str(image.with_suffix(""))
        if key in self.by_path:
            return self.by_path[key]
        named = self.by_stem.get(image.stem, [])
        return named[0] if len(named) == 1 else None  # two masks of that name: neither is sure

    def read(self, image: Path) -> Any:  # a mask array, or None when absent or unreadable
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        path = self.find(image)
        if path is None:
            return None
        try:
            with Image.open(path) as opened:
                return np.asarray(opened.convert("L"))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            return None


def _predict_anomaly(
    pkg: Path, images: tuple[Path, ...], detector_id: str | None, maps_dir: Path | None, overlays_dir: Path | None
) -> None:
    import numpy as np

    from intellioptics_common.anomaly import render_overlay, resize_map
    from intellioptics_training.anomaly_eval import load_scorer, to_json

    scorer = load_scorer(pkg, detector_id)
    failed: list[Path] = []
    for directory in (maps_dir, overlays_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    for path in images:
        try:
            # As the edge decodes and runs it: the same answer as POST image-queries.
            rgb, result = scorer.score_bytes(path.read_bytes())
        except (IntelliOpticsError, OSError) as exc:
            click.echo(f"{path}: unreadable ({getattr(exc, 'public_message', exc)})", err=True)
            failed.append(path)
            continue
        if maps_dir is not None:
            np.save(maps_dir / f"{path.stem}.npy", resize_map(result.anomaly_map, *rgb.shape[:2]).astype(np.float32))
        if overlays_dir is not None:
            for kind in ("heatmap", "boxes"):
                png = render_overlay(rgb, result.anomaly_map, result.boxes, kind, scorer.spec.threshold)
                (overlays_dir / f"{path.stem}_{kind}.png").write_bytes(png)
        _print_json(to_json(result, str(path), scorer.last_in_domain))
    if failed:
        _fail(f"{len(failed)} of {len(images)} image(s) were unreadable")


@main.group()
def jobs() -> None:
    """Training jobs on the cloud: queue one, watch it, list a detector's, cancel one."""


Command = TypeVar("Command", bound=Callable[..., Any])


def _cloud_options(command: Command) -> Command:
    """--cloud, --token and --json on every jobs subcommand, so they can follow its arguments."""
    command = click.option("--json", "as_json", is_flag=True, help="Print the cloud's JSON answer.")(command)
    command = click.option(
        "--token",
        envvar="INTELLIOPTICS_API_TOKEN",
        show_envvar=True,
        required=True,
        help="API token (admin to create or cancel a job).",
    )(command)
    return click.option(
        "--cloud",
        "cloud_url",
        envvar="INTELLIOPTICS_CLOUD_URL",
        show_envvar=True,
        required=True,
        help="Base URL of the cloud API, e.g. http://127.0.0.1:8000.",
    )(command)


@dataclass(frozen=True)
class JobView:
    """The part of a cloud ``TrainingJob`` that a person reads."""

    id: str
    detector_id: str
    status: str
    trainer: str
    trigger: str
    progress: float
    created_at: str
    eta_s: float | None
    message: str | None
    error: str | None
    model_version: int | None
    attempts: int

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JobView:
        return cls(
            id=str(data["id"]),
            detector_id=str(data["detector_id"]),
            status=str(data["status"]),
            trainer=str(data["trainer"]),
            trigger=str(data["trigger"]),
            progress=float(data["progress"]),
            created_at=str(data["created_at"]),
            eta_s=data.get("eta_s"),
            message=data.get("message"),
            error=data.get("error"),
            model_version=data.get("model_version"),
            attempts=int(data.get("attempts") or 0),
        )

    def line(self) -> str:
        return (
            f"{self.id}  {self.status:9s} {self.progress:4.0%}  trainer={self.trainer} trigger={self.trigger}"
            f"  created={self.created_at}"
        )

    def details(self) -> list[str]:
        extra = {
            "detector": self.detector_id,
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "message": self.message,
            "model_version": self.model_version,
            "attempts": self.attempts,
            "error": self.error,
        }
        return [self.line(), *(f"  {key}: {value}" for key, value in extra.items() if value is not None)]


def _cloud(cloud_url: str, token: str, method: str, path: str, **kwargs: Any) -> Any:
    """One call to the cloud API; a refusal or an unreachable cloud ends the command with
    the cloud's reason. No retries: a person is waiting and can run it again."""
    import httpx

    url = f"{cloud_url.rstrip('/')}/v1{path}"
    try:
        response = httpx.request(method, url, headers={"x-api-token": token}, timeout=30.0, **kwargs)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        _fail(f"cannot reach the cloud API at {cloud_url}: {exc}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        reason = body.get("detail") if isinstance(body, dict) else None
        code = f", {body['code']}" if isinstance(body, dict) and body.get("code") else ""
        _fail(f"the cloud API answered {response.status_code}{code}: {reason or response.reason_phrase}")
    if body is None:
        _fail(f"{url} did not answer with JSON; is {cloud_url} the cloud API?")
    return body


def _job_path(job_id: str, action: str = "") -> str:
    return f"/training-jobs/{quote(job_id, safe='')}{action}"


def _show_job(data: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(data)
    else:
        click.echo("\n".join(JobView.from_wire(data).details()))


@jobs.command("create")
@click.argument("detector_id")
@click.option(
    "--trainer",
    type=click.Choice(["auto", "fast", "finetune", "anomaly"]),
    default="auto",
    show_default=True,
    help="auto: an anomaly model from the good images while a BINARY detector has too few YES labels, "
    "else the fast trainer; anomaly: the anomaly model (BINARY).",
)
@_cloud_options
def jobs_create(detector_id: str, trainer: str, cloud_url: str, token: str, as_json: bool) -> None:
    """Queue a training job for DETECTOR_ID; a worker picks it up."""
    path = f"/detectors/{quote(detector_id, safe='')}/training-jobs"
    _show_job(_cloud(cloud_url, token, "POST", path, json={"trainer": trainer}), as_json)


@jobs.command("status")
@click.argument("job_id")
@_cloud_options
def jobs_status(job_id: str, cloud_url: str, token: str, as_json: bool) -> None:
    """Show one job: status, progress, message, resulting model version or error."""
    _show_job(_cloud(cloud_url, token, "GET", _job_path(job_id)), as_json)


@jobs.command("list")
@click.argument("detector_id")
@_cloud_options
def jobs_list(detector_id: str, cloud_url: str, token: str, as_json: bool) -> None:
    """List DETECTOR_ID's jobs, newest first."""
    # The detector first: a mistyped id is a 404, not an empty list.
    _cloud(cloud_url, token, "GET", f"/detectors/{quote(detector_id, safe='')}")
    listed = _cloud(cloud_url, token, "GET", "/training-jobs", params={"detector_id": detector_id})
    if as_json:
        _print_json(listed)
    elif not listed:
        click.echo(f"no training jobs for {detector_id}")
    else:
        for data in listed:
            click.echo(JobView.from_wire(data).line())


@jobs.command("cancel")
@click.argument("job_id")
@_cloud_options
def jobs_cancel(job_id: str, cloud_url: str, token: str, as_json: bool) -> None:
    """Cancel a queued or running job (a running one stops at its next progress report)."""
    _show_job(_cloud(cloud_url, token, "POST", _job_path(job_id, "/cancel")), as_json)


def _read_flat_or_folder(root: Path) -> list:
    """OOD images may sit directly in the folder or in sub-folders."""
    from intellioptics_training.data import IMAGE_SUFFIXES, Sample
    from intellioptics_training.errors import DatasetError

    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [Sample(p.read_bytes(), "OOD", str(p)) for p in files]


class _Epochs(TypedDict, total=False):
    epochs: int


def _epochs(epochs: int | None) -> _Epochs:
    """``--epochs`` when given, else the trainer's own default."""
    return {} if epochs is None else {"epochs": epochs}


def _depth_beside(path: Path, rgb: Any, spec: Any) -> Any:
    """The model's depth input from ``<id>_depth.npy|png`` next to ``<id>_rgb.*``."""
    from intellioptics_common.depth import depth_input
    from intellioptics_common.errors import DepthMapError
    from intellioptics_training.depth import DEPTH_SPEC, find_depth

    depth_path = find_depth(path)
    if depth_path is None:
        raise DepthMapError(f"no depth map beside {path}: expected <id>_depth.npy or <id>_depth.png for <id>_rgb.*")
    return depth_input(depth_path.read_bytes(), (rgb.shape[1], rgb.shape[0]), spec or DEPTH_SPEC)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, sort_keys=True))


if __name__ == "__main__":  # python -m intellioptics_training.cli
    main()
