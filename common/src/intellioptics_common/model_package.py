"""The model package format: one immutable, verified directory per model version.

Layout (``docs/model-package.md``)::

    <models>/<detector_id>/<kind>/<version>/
        model.buf                 ONNX: image tensor in, probabilities (or in-domain score) out
        pipeline_config.yaml      preprocessing, class names, mode, output names
        predictor_metadata.json   metrics, training-set size, backbone id, created_at
        model_id.txt              the registry's id for this binary
        manifest.json             sha256 of every file above

A version appears by atomic rename of a finished temporary directory, so readers never
see half a package; the newest integer version wins; the last ``keep`` versions stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from intellioptics_common.anomaly import DEFAULT_SEVERITY_CUTS, SeverityCuts
from intellioptics_common.depth import DepthSpec
from intellioptics_common.detection import DetectionSpec
from intellioptics_common.errors import PackageError, PackageIntegrityError

FORMAT_VERSION = 1
KINDS = ("primary", "oodd")
MODEL_FILE = "model.buf"
PIPELINE_FILE = "pipeline_config.yaml"
METADATA_FILE = "predictor_metadata.json"
MODEL_ID_FILE = "model_id.txt"
MANIFEST_FILE = "manifest.json"
PACKAGE_FILES = (MODEL_FILE, PIPELINE_FILE, METADATA_FILE, MODEL_ID_FILE)

Kind = Literal["primary", "oodd"]
# What the primary computes: class probabilities, or an anomaly score and map (trained
# from good images only). The kind picks the post-processor; the wire mode stays BINARY.
MODEL_KINDS = ("classifier", "anomaly", "detection")
_DETECTOR_DIR = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")


@dataclass(frozen=True)
class InputSpec:
    """How an RGB image becomes the model's input tensor (implemented once, in preprocessing)."""

    height: int = 320
    width: int = 320
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    layout: Literal["NCHW"] = "NCHW"
    channel_order: Literal["RGB"] = "RGB"
    resize: Literal["stretch"] = "stretch"
    tensor_name: str = "image"


@dataclass(frozen=True)
class BackboneRef:
    """Names the shared feature extractor inside ``model.buf`` so that primary and OODD
    graphs built on the same backbone can run it once (see the inference service)."""

    id: str
    sha256: str
    output: str


@dataclass(frozen=True)
class AnomalySpec:
    """How to read an anomaly primary: its extra outputs and the detector's settings.

    ``threshold`` is on the normalised score (0.5 by construction); ``raw_threshold`` and
    ``raw_scale`` record the distance threshold and logistic scale baked into the graph,
    and ``target_false_alarm`` the rate the threshold was chosen for (docs/training.md).
    """

    threshold: float = 0.5
    severity_cuts: SeverityCuts = DEFAULT_SEVERITY_CUTS
    score_output: str = "anomaly_score"
    map_output: str = "anomaly_map"
    target_false_alarm: float = 0.01
    raw_threshold: float = 0.0
    raw_scale: float = 1.0

    @classmethod
    def from_dict(cls, data: Any) -> AnomalySpec:
        if not isinstance(data, dict):
            raise PackageError("pipeline_config anomaly must be a mapping")
        raw = dict(data)
        cuts = raw.pop("severity_cuts", None)
        try:
            return cls(severity_cuts=SeverityCuts(**cuts) if cuts else DEFAULT_SEVERITY_CUTS, **raw)
        except (TypeError, ValueError) as exc:
            raise PackageError(f"pipeline_config anomaly is invalid: {exc}") from exc


@dataclass(frozen=True)
class PipelineConfig:
    kind: Kind
    mode: str  # DetectorMode value
    class_names: tuple[str, ...]
    input: InputSpec = field(default_factory=InputSpec)
    output: str = "probabilities"  # OODD: the in-domain score output
    backbone: BackboneRef | None = None
    format_version: int = FORMAT_VERSION
    # A second input: the model also takes a depth map (intellioptics_common.depth).
    depth: DepthSpec | None = None
    model_kind: str = "classifier"
    anomaly: AnomalySpec | None = None
    detection: DetectionSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.depth is None:
            del data["depth"]  # packages without depth read as they always did
        data["class_names"] = list(self.class_names)
        data["input"]["mean"] = list(self.input.mean)
        data["input"]["std"] = list(self.input.std)
        if self.model_kind == "classifier":  # classifier packages read as they always have
            del data["model_kind"]
        if self.anomaly is None:
            del data["anomaly"]
        if self.detection is None:
            del data["detection"]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> PipelineConfig:
        if not isinstance(data, dict):
            raise PackageError("pipeline_config must be a mapping")
        try:
            version = int(data.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise PackageError(f"pipeline_config format_version {version} is newer than this software supports")
            kind = data["kind"]
            if kind not in KINDS:
                raise PackageError(f"pipeline_config kind must be one of {KINDS}, got {kind!r}")
            raw_input = dict(data.get("input") or {})
            for key in ("mean", "std"):
                if key in raw_input:
                    raw_input[key] = tuple(float(v) for v in raw_input[key])
                    if len(raw_input[key]) != 3:
                        raise PackageError(f"pipeline_config input.{key} must have 3 values")
            spec = InputSpec(**raw_input)
            if not (8 <= spec.height <= 4096 and 8 <= spec.width <= 4096):
                raise PackageError("pipeline_config input size must be between 8 and 4096 pixels")
            backbone = data.get("backbone")
            depth = data.get("depth")
            depth_spec = DepthSpec(**depth) if depth else None
            if depth_spec is not None and not (8 <= depth_spec.height <= 1024 and 8 <= depth_spec.width <= 1024):
                raise PackageError("pipeline_config depth size must be between 8 and 1024 pixels")
            class_names = tuple(str(name) for name in data["class_names"])
            if not class_names:
                raise PackageError("pipeline_config class_names must not be empty")
            model_kind = str(data.get("model_kind", "classifier"))
            if model_kind not in MODEL_KINDS:
                raise PackageError(f"pipeline_config model_kind must be one of {MODEL_KINDS}, got {model_kind!r}")
            anomaly = AnomalySpec.from_dict(data["anomaly"]) if data.get("anomaly") else None
            if model_kind == "anomaly" and kind == "primary" and anomaly is None:
                raise PackageError("pipeline_config of an anomaly primary needs its anomaly section")
            detection = DetectionSpec.from_dict(data["detection"]) if data.get("detection") else None
            if model_kind == "detection" and kind == "primary" and detection is None:
                raise PackageError("pipeline_config of a detection primary needs its detection section")
            return cls(
                kind=kind,
                mode=str(data["mode"]),
                class_names=class_names,
                input=spec,
                output=str(data.get("output", "probabilities")),
                backbone=BackboneRef(**backbone) if backbone else None,
                format_version=version,
                depth=depth_spec,
                model_kind=model_kind,
                anomaly=anomaly,
                detection=detection,
            )
        except PackageError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise PackageError(f"pipeline_config is invalid: {exc!r}") from exc

    @classmethod
    def from_yaml(cls, text: str) -> PipelineConfig:
        try:
            return cls.from_dict(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise PackageError(f"pipeline_config.yaml is not valid YAML: {exc}") from exc


@dataclass(frozen=True)
class PredictorMetadata:
    detector_id: str
    kind: Kind
    trainer: str
    backbone_id: str
    training_set_size: int
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    class_counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PredictorMetadata:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise PackageError(f"predictor_metadata.json is invalid: {exc}") from exc


@dataclass(frozen=True)
class ModelPackage:
    """A verified package version, read from disk."""

    path: Path
    detector_id: str
    kind: Kind
    version: int
    model_id: str
    pipeline: PipelineConfig
    metadata: PredictorMetadata
    model_sha256: str

    def model_bytes(self) -> bytes:
        return (self.path / MODEL_FILE).read_bytes()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kind_dir(models_dir: Path, detector_id: str, kind: Kind) -> Path:
    if not _DETECTOR_DIR.match(detector_id):
        raise PackageError(f"{detector_id!r} is not a valid detector id")
    if kind not in KINDS:
        raise PackageError(f"kind must be one of {KINDS}")
    return Path(models_dir) / detector_id / kind


def list_versions(models_dir: Path, detector_id: str, kind: Kind) -> list[int]:
    """Integer version directories, oldest first; temporary and odd names are ignored."""
    directory = kind_dir(models_dir, detector_id, kind)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")


def latest_version(models_dir: Path, detector_id: str, kind: Kind) -> int | None:
    versions = list_versions(models_dir, detector_id, kind)
    return versions[-1] if versions else None


def list_detectors(models_dir: Path) -> list[str]:
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _DETECTOR_DIR.match(p.name))


def write_version(
    models_dir: Path,
    detector_id: str,
    kind: Kind,
    *,
    model_bytes: bytes,
    pipeline: PipelineConfig,
    metadata: PredictorMetadata,
    model_id: str,
    version: int | None = None,
    keep: int = 2,
    expected_sha256: str | None = None,
) -> Path:
    """Write a new version directory and rename it into place atomically.

    ``expected_sha256`` (from a download) is checked before anything becomes visible.
    """
    if pipeline.kind != kind or metadata.kind != kind:
        raise PackageError(f"pipeline_config and metadata must both be of kind {kind!r}")
    model_sha = sha256_bytes(model_bytes)
    if expected_sha256 is not None and model_sha != expected_sha256.lower():
        raise PackageIntegrityError(
            "The downloaded model does not match its sha256; it was refused.",
            log_message=f"sha256 mismatch: expected {expected_sha256}, got {model_sha}",
        )
    directory = kind_dir(models_dir, detector_id, kind)
    directory.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = (latest_version(models_dir, detector_id, kind) or 0) + 1
    final = directory / str(version)
    if final.exists():
        raise PackageError(f"version {version} of {detector_id}/{kind} already exists; versions are immutable")
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=directory))
    try:
        files = {
            MODEL_FILE: model_bytes,
            PIPELINE_FILE: pipeline.to_yaml().encode(),
            METADATA_FILE: metadata.to_json().encode(),
            MODEL_ID_FILE: model_id.encode(),
        }
        for name, content in files.items():
            _write_synced(staging / name, content)
        manifest = {
            "format_version": FORMAT_VERSION,
            "files": {name: sha256_bytes(content) for name, content in files.items()},
        }
        _write_synced(staging / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
        os.chmod(staging, 0o755)
        os.rename(staging, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune_versions(models_dir, detector_id, kind, keep=keep)
    return final


def prune_versions(models_dir: Path, detector_id: str, kind: Kind, *, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` versions (and stale staging directories)."""
    directory = kind_dir(models_dir, detector_id, kind)
    for old in list_versions(models_dir, detector_id, kind)[:-keep] if keep > 0 else []:
        # Renamed away first (atomic), so a reader sees a version whole or not at all.
        doomed = directory / f".{old}.tmp-prune-{os.getpid()}"
        try:
            os.rename(directory / str(old), doomed)
        except OSError:
            continue  # pruned by another writer meanwhile
        shutil.rmtree(doomed, ignore_errors=True)
    for stale in directory.glob(".*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_version(path: Path, *, verify: bool = True) -> ModelPackage:
    """Read and (by default) sha256-verify one version directory."""
    path = Path(path)
    if not path.is_dir() or not path.name.isdigit():
        raise PackageError(f"{path} is not a model package version directory")
    missing = [name for name in (*PACKAGE_FILES, MANIFEST_FILE) if not (path / name).is_file()]
    if missing:
        raise PackageIntegrityError(f"model package {path} is missing {', '.join(missing)}")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        expected = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PackageIntegrityError(f"manifest.json of {path} is unreadable") from exc
    actual = {name: sha256_file(path / name) for name in PACKAGE_FILES}
    if verify:
        bad = [name for name in PACKAGE_FILES if expected.get(name) != actual[name]]
        if bad:
            raise PackageIntegrityError(f"model package {path} failed sha256 verification: {', '.join(bad)}")
    pipeline = PipelineConfig.from_yaml((path / PIPELINE_FILE).read_text())
    metadata = PredictorMetadata.from_json((path / METADATA_FILE).read_text())
    kind = path.parent.name
    if kind not in KINDS or pipeline.kind != kind:
        raise PackageError(f"model package {path} declares kind {pipeline.kind!r} but lives under {kind!r}")
    return ModelPackage(
        path=path,
        detector_id=path.parent.parent.name,
        kind=pipeline.kind,
        version=int(path.name),
        model_id=(path / MODEL_ID_FILE).read_text().strip(),
        pipeline=pipeline,
        metadata=metadata,
        model_sha256=actual[MODEL_FILE],
    )


def read_latest(models_dir: Path, detector_id: str, kind: Kind) -> ModelPackage | None:
    """The newest version; one pruned while being read gives way to the newer one."""
    version = latest_version(models_dir, detector_id, kind)
    while version is not None:
        try:
            return read_version(kind_dir(models_dir, detector_id, kind) / str(version))
        except (PackageError, OSError):
            newer = latest_version(models_dir, detector_id, kind)
            if newer == version:
                raise
            version = newer
    return None


def _write_synced(path: Path, content: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
