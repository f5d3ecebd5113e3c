"""``edge-config.yaml``: Groundlight's schema plus detector metadata for offline operation.

The schema follows the ``groundlight`` SDK 1.3.1 (``groundlight/edge/config.py``) so
that ``Groundlight().edge.get_config()`` / ``apply_config()`` work unchanged; detector
entries may also carry ``name``, ``query``, ``mode``, ``class_names`` and
``confidence_threshold``, which let the edge answer with no cloud at all.

The file is re-read when its mtime changes (checked at most once a second, on use); a
file that does not validate is refused with a message naming the bad field and the
last good configuration keeps serving. ``PUT /edge-config`` validates first, then
writes atomically (temporary file + rename), so the file is never half-written.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from intellioptics_common.errors import ConfigError
from intellioptics_common.schemas import DetectorMode
from intellioptics_common.streams import Streams
from intellioptics_edge.rules import Rule

logger = logging.getLogger(__name__)

DEFAULT_MIN_TIME_BETWEEN_ESCALATIONS_S = 30.0
_RELOAD_CHECK_INTERVAL_S = 1.0


class _Strict(BaseModel):
    # Unknown keys are refused: a misspelt option must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class GlobalConfig(_Strict):
    refresh_rate: Annotated[float, Field(gt=0, le=86400)] = 60.0
    confident_audit_rate: Annotated[float, Field(ge=0, le=1)] = 1e-5


class InferenceConfig(_Strict):
    enabled: bool = True
    always_return_edge_prediction: bool = False
    disable_cloud_escalation: bool = False
    min_time_between_escalations: Annotated[float, Field(gt=0)] = DEFAULT_MIN_TIME_BETWEEN_ESCALATIONS_S
    # Spend human labels well (intellioptics_edge.spending): 0 s turns the near-duplicate check off.
    near_duplicate_window_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    near_duplicate_distance: Annotated[int, Field(ge=0, le=32)] = 6
    max_escalations_per_hour: Annotated[int, Field(ge=1, le=1_000_000)] | None = None

    @model_validator(mode="after")
    def _escalation_needs_edge_answers(self) -> Self:
        if self.disable_cloud_escalation and not self.always_return_edge_prediction:
            raise ValueError("disable_cloud_escalation: true requires always_return_edge_prediction: true")
        return self


PRESETS: dict[str, InferenceConfig] = {
    "default": InferenceConfig(),
    "edge_answers_with_escalation": InferenceConfig(always_return_edge_prediction=True),
    "no_cloud": InferenceConfig(always_return_edge_prediction=True, disable_cloud_escalation=True),
    "disabled": InferenceConfig(enabled=False),
}


class DetectorEntry(_Strict):
    detector_id: Annotated[str, Field(pattern=r"^det_[A-Za-z0-9]{27}$")]
    edge_inference_config: Annotated[str, Field(min_length=1)] = "default"
    # IntelliOptics: detector metadata, so that the edge needs no cloud to answer.
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    query: Annotated[str, Field(max_length=300)] | None = None
    mode: Literal["BINARY", "MULTI_CLASS"] = "BINARY"
    class_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2, max_length=50)] | None = None
    confidence_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9
    patience_time: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # The rule stage (intellioptics_edge.rules): checks run in order before the model.
    rules: Annotated[list[Rule], Field(max_length=20)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _multiclass_needs_names(self) -> Self:
        if self.mode == DetectorMode.MULTI_CLASS.value and not self.class_names:
            raise ValueError("class_names is required when mode is MULTI_CLASS")
        if self.class_names and len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must be unique")
        return self

    @model_validator(mode="after")
    def _rule_labels_fit_the_mode(self) -> Self:
        allowed = set(self.class_names or ()) if self.mode == DetectorMode.MULTI_CLASS.value else {"YES", "NO"}
        for index, rule in enumerate(self.rules):
            unknown = rule.labels() - allowed
            if unknown:
                raise ValueError(
                    f"rules.{index} ({rule.check}) answers {sorted(unknown)}, which this {self.mode} detector "
                    f"cannot answer (allowed: {sorted(allowed)})"
                )
        return self

    def has_metadata(self) -> bool:
        return self.query is not None or self.name is not None

    def metadata_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"detector_id", "edge_inference_config", "rules"}, exclude_unset=True)


class EdgeConfig(_Strict):
    global_config: GlobalConfig = GlobalConfig()
    edge_inference_configs: dict[str, InferenceConfig] = Field(default_factory=lambda: dict(PRESETS))
    detectors: list[DetectorEntry] = Field(default_factory=list)
    # IntelliOptics: camera streams, run by the stream service (docs/edge-config.md).
    streams: Streams = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _add_presets(cls, data: Any) -> Any:
        # The four presets always exist; a file may redefine them or add its own.
        if isinstance(data, dict):
            configs = data.get("edge_inference_configs") or {}
            if isinstance(configs, dict):
                data = {**data, "edge_inference_configs": {**PRESETS, **configs}}
            if data.get("detectors") is None:
                data = {**data, "detectors": []}
            if data.get("streams") is None:
                data = {**data, "streams": {}}
        return data

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        seen: set[str] = set()
        for index, entry in enumerate(self.detectors):
            if entry.detector_id in seen:
                raise ValueError(f"detectors.{index}.detector_id: {entry.detector_id} is listed twice")
            seen.add(entry.detector_id)
            if entry.edge_inference_config not in self.edge_inference_configs:
                known = ", ".join(sorted(self.edge_inference_configs))
                raise ValueError(
                    f"detectors.{index}.edge_inference_config: {entry.edge_inference_config!r} is not defined "
                    f"in edge_inference_configs (known: {known})"
                )
        return self

    def entry(self, detector_id: str) -> DetectorEntry | None:
        for entry in self.detectors:
            if entry.detector_id == detector_id:
                return entry
        return None

    def inference_config_for(self, detector_id: str) -> InferenceConfig:
        """Unlisted detectors behave as ``default``, as on Groundlight's edge."""
        entry = self.entry(detector_id)
        return self.edge_inference_configs[entry.edge_inference_config if entry else "default"]

    def to_payload(self) -> dict[str, Any]:
        payload = self.model_dump(mode="json", exclude_none=True)
        for detector in payload["detectors"]:
            if not detector.get("rules"):
                detector.pop("rules", None)
        if not self.streams:
            del payload["streams"]  # a file without streams stays as Groundlight's schema has it
        return payload

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_payload(), sort_keys=False)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def parse_edge_config(data: Any, source: str = "edge-config") -> EdgeConfig:
    """Validate a parsed document; a :class:`ConfigError` names every bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping with global_config, edge_inference_configs, detectors, streams"
        )
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid: {_describe(exc)}", log_message=str(exc)) from exc


def parse_edge_config_yaml(text: str, source: str = "edge-config.yaml") -> EdgeConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    return parse_edge_config(data, source)


def merge_offline_metadata(new: EdgeConfig, old: EdgeConfig) -> EdgeConfig:
    """Keep the detector metadata of ``old`` for entries of ``new`` that carry none.

    The SDK's ``apply_config`` sends only Groundlight's fields; without this a round
    trip through the SDK would erase the metadata the edge needs offline.
    """
    entries = []
    for entry in new.detectors:
        previous = old.entry(entry.detector_id)
        if previous is not None:
            fields = entry.metadata_fields()
            if not entry.has_metadata() and previous.has_metadata():
                fields = previous.metadata_fields()
            # The SDK's config model has no ``rules``: a round trip through it keeps them.
            rules = entry.rules if "rules" in entry.model_fields_set else previous.rules
            if fields != entry.metadata_fields() or rules != entry.rules:
                entry = DetectorEntry(
                    detector_id=entry.detector_id,
                    edge_inference_config=entry.edge_inference_config,
                    rules=rules,
                    **fields,
                )
        entries.append(entry)
    return new.model_copy(update={"detectors": entries})


@dataclass(frozen=True)
class ConfigState:
    config: EdgeConfig
    loaded_from_mtime: float | None
    error: str | None  # why the file on disk is not the one serving, if it is not


class EdgeConfigManager:
    """Holds the serving configuration and follows the file on disk."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._state = ConfigState(EdgeConfig(), None, None)
        self._reload(force=True)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def state(self) -> ConfigState:
        self.current()
        return self._state

    def current(self) -> EdgeConfig:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _RELOAD_CHECK_INTERVAL_S
            self._reload()
        return self._state.config

    def _reload(self, force: bool = False) -> None:
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            if force:
                logger.warning("edge-config %s does not exist; serving an empty configuration", self._path)
            return
        if not force and mtime == self._state.loaded_from_mtime:
            return
        with self._lock:
            try:
                config = parse_edge_config_yaml(self._path.read_text(), str(self._path))
            except (ConfigError, OSError, UnicodeDecodeError) as exc:
                message = getattr(exc, "public_message", str(exc))
                logger.error("edge-config refused, the previous configuration keeps serving: %s", message)
                self._state = ConfigState(self._state.config, mtime, message)
                return
            self._state = ConfigState(config, mtime, None)
            logger.info("edge-config loaded from %s (%d detectors)", self._path, len(config.detectors))

    def replace(self, payload: Any, *, allow_empty: bool = False) -> EdgeConfig:
        """Validate ``payload``, write it atomically, serve it; on error nothing changes.

        An empty body (``null``, ``{}``) or one that would leave no detector where some
        are configured is refused unless ``allow_empty``: a slip of a script must not
        silently turn every detector off."""
        if not allow_empty and not payload:
            raise ConfigError(
                "PUT /edge-config body is empty (null or {}); send the whole configuration, "
                "or add ?allow_empty=true to really reset it."
            )
        current = self.current()
        config = merge_offline_metadata(parse_edge_config(payload, "PUT /edge-config body"), current)
        if not allow_empty and current.detectors and not config.detectors:
            raise ConfigError(
                f"PUT /edge-config body lists no detectors and would remove all {len(current.detectors)} configured "
                "ones; list the detectors to keep, or add ?allow_empty=true to really remove them all."
            )
        if isinstance(payload, dict) and "streams" not in payload:
            # The SDK's apply_config knows no streams: a body without the key keeps them
            # (``streams: {}`` removes them all).
            config = config.model_copy(update={"streams": current.streams})
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".edge-config.", suffix=".tmp", dir=self._path.parent)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(config.to_yaml())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self._path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._state = ConfigState(config, self._path.stat().st_mtime, None)
        return config
