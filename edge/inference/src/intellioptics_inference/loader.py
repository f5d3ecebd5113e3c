"""Read a detector's packages from the models directory and build a ready model.

Rules: the newest version of each kind that passes sha256 verification is used; a
refused version is logged with its reason and the next older one is tried (the model
package format keeps two). A detector with an ``oodd`` directory but no usable OODD
version is refused as a whole: serving its primary alone would report unadjusted,
over-confident answers. A version whose ``model.buf`` fails
:func:`intellioptics_common.model_check.check_model_bytes` (external data: a path ONNX
Runtime would read from this machine; operators outside the allow-list) is refused the
same way, before ONNX Runtime ever sees it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from intellioptics_common.errors import IntelliOpticsError, PackageError
from intellioptics_common.model_check import check_model_bytes
from intellioptics_common.model_package import Kind, ModelPackage, kind_dir, list_versions, read_version, sha256_bytes
from intellioptics_common.runtime import DetectorModel, DiskState, Fuser, RuntimeOptions, SharedBackbones, build_model
from intellioptics_common.schemas import SUPPORTED_MODES
from intellioptics_inference.errors import DetectorNotFoundError, ModelUnusableError

logger = logging.getLogger(__name__)

_SERVABLE_MODES = tuple(mode.value for mode in SUPPORTED_MODES)


@dataclass(frozen=True)
class LoadReport:
    model: DetectorModel
    refused: tuple[str, ...]  # reasons, one per refused version


def disk_state(models_dir: Path, detector_id: str) -> DiskState:
    primary = list_versions(models_dir, detector_id, "primary")
    oodd = list_versions(models_dir, detector_id, "oodd")
    return DiskState(primary[-1] if primary else None, oodd[-1] if oodd else None)


def load_detector(
    models_dir: Path,
    detector_id: str,
    runtime: RuntimeOptions,
    fuser: Fuser | None = None,
    backbones: SharedBackbones | None = None,
) -> LoadReport:
    """Blocking: verify, build sessions, warm up. Run it off the event loop. With
    ``backbones``, the model can also share its backbone run with other detectors."""
    start = time.perf_counter()
    state = disk_state(models_dir, detector_id)
    if state.primary is None:
        raise DetectorNotFoundError(f"No model is installed for detector {detector_id} on this edge.")
    refused: list[str] = []
    primary = _newest_valid(models_dir, detector_id, "primary", refused)
    oodd = _newest_valid(models_dir, detector_id, "oodd", refused) if state.oodd is not None else None
    if primary is None or (state.oodd is not None and oodd is None):
        raise ModelUnusableError(
            f"The model packages of detector {detector_id} on this edge were refused: {'; '.join(refused)}. "
            "Install a new version."
        )
    try:
        model = _build(primary, oodd, state, runtime, fuser, backbones)
    except (PackageError, OSError) as exc:  # OSError: a version pruned while we read it
        raise ModelUnusableError(
            f"The model of detector {detector_id} (primary v{primary.version}) cannot run: {exc}. Install a new version."
        ) from exc
    model.load_s = time.perf_counter() - start
    return LoadReport(model, tuple(refused))


def _newest_valid(models_dir: Path, detector_id: str, kind: Kind, refused: list[str]) -> ModelPackage | None:
    directory = kind_dir(models_dir, detector_id, kind)
    for version in reversed(list_versions(models_dir, detector_id, kind)):
        try:
            package = read_version(directory / str(version))
            if package.detector_id != detector_id or package.kind != kind:
                raise PackageError(f"package at {package.path} belongs to {package.detector_id}/{package.kind}")
            if package.pipeline.mode not in _SERVABLE_MODES:
                raise PackageError(f"mode {package.pipeline.mode!r} cannot be served (use one of {_SERVABLE_MODES})")
            check_model_bytes(package.model_bytes(), f"{kind} v{version}")
            return package
        except (IntelliOpticsError, OSError) as exc:
            reason = f"{kind} v{version}: {exc}"
            logger.warning("refused model package %s/%s", detector_id, reason)
            refused.append(reason)
    return None


def _read_model(package: ModelPackage) -> bytes:
    """The bytes that get loaded are the bytes that were verified (no swap in between)."""
    data = package.model_bytes()
    if sha256_bytes(data) != package.model_sha256:
        raise PackageError(f"{package.kind} v{package.version} changed on disk while loading")
    return data


def _build(
    primary: ModelPackage,
    oodd: ModelPackage | None,
    state: DiskState,
    runtime: RuntimeOptions,
    fuser: Fuser | None,
    backbones: SharedBackbones | None,
) -> DetectorModel:
    primary_bytes = _read_model(primary)
    oodd_bytes = _read_model(oodd) if oodd is not None else None
    return build_model(
        primary, primary_bytes, oodd, oodd_bytes, runtime, fuser=fuser, disk_state=state, backbones=backbones
    )
