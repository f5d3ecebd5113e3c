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

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from intellioptics_common.errors import IntelliOpticsError, PackageError
from intellioptics_common.model_check import check_model_bytes
from intellioptics_common.model_package import Kind, ModelPackage, kind_dir, list_versions, read_version, sha256_bytes
from intellioptics_common.schemas import SUPPORTED_MODES
from intellioptics_inference.errors import DetectorNotFoundError, ModelUnusableError
from intellioptics_inference.model import (
    DetectorModel,
    DiskState,
    FusedDetectorModel,
    RuntimeOptions,
    SeparateDetectorModel,
    extra_outputs_of,
)

logger = logging.getLogger(__name__)

_SERVABLE_MODES = tuple(mode.value for mode in SUPPORTED_MODES)
# (primary_bytes, oodd_bytes) -> fused ONNX bytes whose outputs keep both packages' output names.
Fuser = Callable[[bytes, bytes], bytes]


@dataclass(frozen=True)
class LoadReport:
    model: DetectorModel
    refused: tuple[str, ...]  # reasons, one per refused version


def disk_state(models_dir: Path, detector_id: str) -> DiskState:
    primary = list_versions(models_dir, detector_id, "primary")
    oodd = list_versions(models_dir, detector_id, "oodd")
    return DiskState(primary[-1] if primary else None, oodd[-1] if oodd else None)


def default_fuser() -> Fuser | None:
    """The shared-backbone fuser of the common library, when this install has one."""
    try:
        module = importlib.import_module("intellioptics_common.onnx_fuse")
    except ImportError:
        return None
    return getattr(module, "fuse_primary_oodd", None)


def load_detector(
    models_dir: Path, detector_id: str, runtime: RuntimeOptions, fuser: Fuser | None = None
) -> LoadReport:
    """Blocking: verify, build sessions, warm up. Run it off the event loop."""
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
        model = _build(primary, oodd, state, runtime, fuser)
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
    primary: ModelPackage, oodd: ModelPackage | None, state: DiskState, runtime: RuntimeOptions, fuser: Fuser | None
) -> DetectorModel:
    primary_bytes = _read_model(primary)
    oodd_bytes = _read_model(oodd) if oodd is not None else b""
    size = len(primary_bytes) + len(oodd_bytes)
    # A depth primary has a second input: it shares no backbone run (its package names none).
    if oodd is not None and fuser is not None and primary.pipeline.depth is None and _shares_backbone(primary, oodd):
        fused = _try_fuse(primary, oodd, primary_bytes, oodd_bytes, runtime, fuser, state)
        if fused is not None:
            return fused
    primary_session = runtime.session(primary_bytes, f"primary v{primary.version}")
    oodd_session = runtime.session(oodd_bytes, f"oodd v{oodd.version}") if oodd is not None else None
    _check_outputs(primary_session, primary)
    if oodd_session is not None and oodd is not None:
        _check_outputs(oodd_session, oodd)
    model = SeparateDetectorModel(primary, oodd, primary_session, oodd_session, disk_state=state, size_bytes=size)
    model.warm_up()
    return model


def _shares_backbone(primary: ModelPackage, oodd: ModelPackage) -> bool:
    a, b = primary.pipeline.backbone, oodd.pipeline.backbone
    return (
        a is not None
        and b is not None
        and (a.id, a.sha256, a.output) == (b.id, b.sha256, b.output)
        and primary.pipeline.input == oodd.pipeline.input
    )


def _try_fuse(
    primary: ModelPackage,
    oodd: ModelPackage,
    primary_bytes: bytes,
    oodd_bytes: bytes,
    runtime: RuntimeOptions,
    fuser: Fuser,
    state: DiskState,
) -> FusedDetectorModel | None:
    """Fusion is an optimisation: when it fails, log why and run two sessions."""
    try:
        fused_bytes = fuser(primary_bytes, oodd_bytes)
        session = runtime.session(fused_bytes, "fused primary+oodd")
        names = {output.name for output in session.get_outputs()}
        wanted = (primary.pipeline.output, oodd.pipeline.output, *extra_outputs_of(primary.pipeline))
        if not set(wanted) <= names:
            raise PackageError(f"the fused graph has outputs {sorted(names)}, not {list(wanted)}")
        model = FusedDetectorModel(primary, oodd, session, *wanted[:2], disk_state=state, size_bytes=len(fused_bytes))
        model.warm_up()
        return model
    except Exception as exc:  # any failure of the optimisation falls back to the plain path
        logger.warning(
            "could not fuse %s primary v%s with oodd v%s (running two sessions): %s",
            primary.detector_id,
            primary.version,
            oodd.version,
            exc,
        )
        return None


def _check_outputs(session: object, package: ModelPackage) -> None:
    names = [output.name for output in session.get_outputs()]  # type: ignore[attr-defined]
    wanted = [package.pipeline.output, *extra_outputs_of(package.pipeline)]
    for output in wanted:
        if output not in names:
            raise PackageError(f"{package.kind} v{package.version} has no output {output!r} (it has {names})")
