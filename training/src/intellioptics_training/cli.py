"""The ``intellioptics`` command line: for people (train, evaluate, predict, data, backbone,
and training jobs on the cloud).

Every command fails with a one-line message and a non-zero exit on bad input; long
work shows a progress bar on stderr so ``--json`` output on stdout stays parseable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import click

from intellioptics_common.errors import IntelliOpticsError
from intellioptics_training.config import data_dir


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
@click.option("--kind", type=click.Choice(["binary", "multiclass", "ood"]), default="binary")
@click.option("--n-per-class", type=click.IntRange(1, 100_000), default=100)
@click.option("--seed", type=int, default=0)
@click.option("--strength", type=click.FloatRange(0.1, 10.0), default=1.0, help="Defect contrast multiplier.")
def dataset_generate(out: Path, kind: str, n_per_class: int, seed: int, strength: float) -> None:
    """Write textured surfaces with subtle defects (or unrelated photos) as OUT/<label>/*.png."""
    from intellioptics_training.synthetic import write_dataset

    count = write_dataset(out, kind, n_per_class, seed, strength)
    click.echo(f"wrote {count} images to {out}")


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["binary", "multiclass"]), default="binary")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--detector-id", default="det_local")
@click.option("--trainer", type=click.Choice(["fast", "auto", "finetune"]), default="fast")
@click.option("--classes", default=None, help="Comma-separated class names (multiclass).")
@click.option("--epochs", type=click.IntRange(1, 1000), default=None, help="[default: fast 25, finetune 8]")
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
    threshold: float,
    as_json: bool,
) -> None:
    """Train primary + OODD models on DATA/<label>/* and write a new package version."""
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
        samples = read_image_folder(data)
        class_names = tuple(c.strip() for c in classes.split(",")) if classes else None
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
@click.option("--json", "as_json", is_flag=True)
def evaluate(
    pkg: Path, test: Path, threshold: float, ood_dir: Path | None, detector_id: str | None, as_json: bool
) -> None:
    """Evaluate the latest package version on TEST/<label>/*."""
    from intellioptics_training.data import Sample, prepare, read_image_folder
    from intellioptics_training.evaluate import compute_report, load_detector, score_images

    try:
        detector = load_detector(pkg, detector_id)
        pipeline = detector.primary.pipeline
        mode = "binary" if pipeline.mode == "BINARY" else "multiclass"
        spec = pipeline.input
        test_data = prepare(read_image_folder(test), mode, spec, pipeline.class_names, require_two_classes=False)
        if not test_data.rgb:
            _fail(f"no readable test images in {test}")
        scored = score_images(detector, test_data.rgb)
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
@click.option("--json", "as_json", is_flag=True)
def predict(pkg: Path, images: tuple[Path, ...], detector_id: str | None, as_json: bool) -> None:
    """Print label, (OODD-adjusted) confidence and raw confidences for each image."""
    from intellioptics_common.confidence import predict_from_probabilities
    from intellioptics_common.imaging import decode_image
    from intellioptics_training.evaluate import load_detector, score_images

    try:
        detector = load_detector(pkg, detector_id)
        names = detector.primary.pipeline.class_names
        for path in images:
            try:
                rgb = decode_image(path.read_bytes()).rgb
            except (IntelliOpticsError, OSError) as exc:
                click.echo(f"{path}: unreadable ({getattr(exc, 'public_message', exc)})", err=True)
                continue
            scored = score_images(detector, [rgb])
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
    type=click.Choice(["auto", "fast", "finetune"]),
    default="auto",
    show_default=True,
    help="auto leaves the choice to the training library (today: fast).",
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


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, sort_keys=True))
