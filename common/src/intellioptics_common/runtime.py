"""The one model runtime: every part that runs a detector's ONNX graphs runs them here.

The edge's inference service, the cloud's own answers, the worker's scoring (what
promotion decides on) and the training library's evaluator all build a
:class:`DetectorModel` with :func:`build_model`, so they read a package's outputs by the
same rules (the OODD score: exactly one finite value, clipped to [0, 1]) and answer
with the same numbers. Sessions are made in one place, :meth:`RuntimeOptions.session`
(CPU; CUDA first when this onnxruntime has it and the options allow it).

A loaded detector is its primary (+ OODD) sessions behind one template method.

``predict`` = ``pre_process`` (decode once, one tensor per distinct input spec; a
primary with a ``depth`` section also gets the depth map on its grid, by the common
:func:`~intellioptics_common.depth.depth_input` that training and ``predict --depth`` use)
→ ``forward`` (the subclass runs its sessions) → ``post_process`` (OODD-adjusted
confidence, probabilities by class name). Two forward strategies exist:

- :class:`FusedDetectorModel`: primary and OODD name the same backbone and were fused
  into one graph, so the backbone runs once per image;
- :class:`SeparateDetectorModel`: one session per package (or no OODD at all).

Several detectors asked about one image (a camera stream watched by two detectors, say)
run the backbone they share once: given a :class:`SharedBackbones` registry,
:func:`build_model` also cuts the graph it serves at the backbone's outputs
(:mod:`intellioptics_common.onnx_split`) and keeps the head; :func:`answer_many` then
decodes the image once, runs each distinct backbone once and every detector's head on
its features. The single-detector path is left as it was.

What a model computes never changes after construction (only its ``load_s``
bookkeeping is set once by the loader), and ``InferenceSession.run`` is thread-safe, so
instances are shared between threads and a hot swap is one reference assignment.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnxruntime as ort

from intellioptics_common.anomaly import AnomalyResult, interpret
from intellioptics_common.confidence import Prediction, predict_from_probabilities
from intellioptics_common.depth import DepthSpec, depth_input
from intellioptics_common.detection import BOX_OFFSET, BOX_SIZE, DetectionResult, DetectionSpec
from intellioptics_common.detection import interpret as interpret_detection
from intellioptics_common.errors import DepthRequiredError, IntelliOpticsError, PackageError
from intellioptics_common.imaging import ImageLimits, decode_image
from intellioptics_common.model_package import AnomalySpec, InputSpec, Kind, PipelineConfig
from intellioptics_common.preprocessing import draft_size, to_input_tensor

if TYPE_CHECKING:
    from intellioptics_common.onnx_split import SplitGraph

logger = logging.getLogger(__name__)

# (primary_bytes, oodd_bytes) -> fused ONNX bytes whose outputs keep both packages' output names.
Fuser = Callable[[bytes, bytes], bytes]


class Part(Protocol):
    """One graph of a model version, as its package describes it (a verified
    ``ModelPackage`` read from disk is one, a :class:`MemoryPart` from the registry another)."""

    @property
    def detector_id(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def version(self) -> int: ...
    @property
    def model_id(self) -> str: ...
    @property
    def pipeline(self) -> PipelineConfig: ...


@dataclass(frozen=True)
class MemoryPart:
    """A graph the caller holds in memory (the cloud's blob store, the worker's download)."""

    detector_id: str
    kind: Kind
    version: int
    model_id: str
    pipeline: PipelineConfig


@dataclass(frozen=True)
class RuntimeOptions:
    """ONNX Runtime knobs, applied to every session a caller creates. ``intra_op_threads``
    0 lets ONNX Runtime choose (all cores: one caller scoring a set); the services run
    1 per request under load. ``providers``: "auto" puts CUDA first when this
    onnxruntime build has it (training machines), "cpu" never does."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    execution_mode: str = "sequential"
    allow_spinning: bool = False
    providers: str = "cpu"

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if self.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if self.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.log_severity_level = 3
        return options

    def execution_providers(self) -> list[str]:
        if self.providers == "auto" and "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def session(self, model_bytes: bytes, what: str) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(model_bytes, self.session_options(), providers=self.execution_providers())
        except Exception as exc:  # ONNX Runtime raises its own untyped exceptions
            raise PackageError(f"{what}: ONNX Runtime refused the model ({exc})") from exc


@dataclass(frozen=True)
class DiskState:
    """The versions a model was built from (on the edge: the newest version directories
    on disk, whose change means "look again")."""

    primary: int | None
    oodd: int | None


@dataclass(frozen=True)
class PreparedImage:
    tensors: tuple[np.ndarray, ...]  # one per distinct InputSpec, in the model's spec order
    decode_s: float
    preprocess_s: float
    depth: np.ndarray | None = None  # 1 x 1 x H x W mm on the primary's depth grid, for depth models


@dataclass(frozen=True)
class ModelOutputs:
    probabilities: np.ndarray  # shape (num_classes,)
    in_domain_score: float | None
    model_s: float
    extras: tuple[np.ndarray, ...] = ()  # anomaly primaries: (score, map); detection: (heatmap, size, offset)


@dataclass(frozen=True)
class Answer:
    prediction: Prediction
    probabilities: dict[str, float]
    in_domain_score: float | None
    decode_s: float
    preprocess_s: float
    model_s: float
    anomaly: AnomalyResult | None = None
    detection: DetectionResult | None = None


def extra_outputs_of(pipeline: PipelineConfig) -> tuple[str, ...]:
    """Outputs a primary gives besides ``pipeline.output``: an anomaly model's score and
    map, a detection model's box sizes and offsets (its ``output`` is the heatmap)."""
    if pipeline.model_kind == "anomaly" and pipeline.anomaly is not None:
        return (pipeline.anomaly.score_output, pipeline.anomaly.map_output)
    if pipeline.model_kind == "detection":
        return (BOX_SIZE, BOX_OFFSET)
    return ()


class DetectorModel(ABC):
    """Template method over a detector's packages; subclasses implement :meth:`forward`."""

    def __init__(
        self,
        primary: Part,
        oodd: Part | None,
        *,
        disk_state: DiskState,
        size_bytes: int,
        load_s: float = 0.0,
    ) -> None:
        self.primary = primary
        self.oodd = oodd
        self.disk_state = disk_state
        self.size_bytes = size_bytes
        self.load_s = load_s
        self.class_names = primary.pipeline.class_names
        kind = primary.pipeline.model_kind
        self.anomaly_spec: AnomalySpec | None = primary.pipeline.anomaly if kind == "anomaly" else None
        self.detection_spec: DetectionSpec | None = primary.pipeline.detection if kind == "detection" else None
        self.extra_outputs = extra_outputs_of(primary.pipeline)
        self.depth_spec: DepthSpec | None = primary.pipeline.depth
        specs = [primary.pipeline.input] + ([oodd.pipeline.input] if oodd is not None else [])
        self.specs: tuple[InputSpec, ...] = tuple(dict.fromkeys(specs))
        # Decode once at the largest scale any spec needs (JPEG draft never goes below it).
        drafts = [draft_size(spec) for spec in self.specs]
        self.draft_size = (max(w for w, _ in drafts), max(h for _, h in drafts))
        # Set by build_model when a SharedBackbones registry was given and the graph cuts.
        self.head: HeadRun | None = None

    @property
    def detector_id(self) -> str:
        return self.primary.detector_id

    @property
    def versions(self) -> tuple[int, int | None]:
        return self.primary.version, None if self.oodd is None else self.oodd.version

    @property
    def fused(self) -> bool:
        return False

    def predict(self, image: bytes, limits: ImageLimits, depth: bytes | np.ndarray | None = None) -> Answer:
        prepared = self.pre_process(image, limits, depth)
        outputs = self.forward(prepared)
        return self.post_process(prepared, outputs)

    def pre_process(self, image: bytes, limits: ImageLimits, depth: bytes | np.ndarray | None = None) -> PreparedImage:
        """``depth`` is required by a depth model and ignored by the others (the edge's
        rule stage may have used it)."""
        if self.depth_spec is not None and depth is None:
            raise self.depth_required()
        start = time.perf_counter()
        rgb = decode_image(image, limits, draft_size=self.draft_size).rgb
        decoded = time.perf_counter()
        prepared = self.prepare(rgb, depth)
        return PreparedImage(prepared.tensors, decoded - start, time.perf_counter() - decoded, prepared.depth)

    def depth_required(
        self, how: str = "send multipart/form-data with an `image` part and a `depth` part"
    ) -> DepthRequiredError:
        return DepthRequiredError(
            f"The model of detector {self.detector_id} was trained with depth and needs the depth map of "
            f"every image: {how} (a 16-bit PNG or a float32 .npy, in mm)."
        )

    def prepare(self, rgb: np.ndarray, depth: bytes | np.ndarray | None = None) -> PreparedImage:
        """An already decoded H x W x 3 image (and its depth map: bytes as sent, a mm array,
        or a 1 x 1 x H x W array already on the model's depth grid) as model inputs."""
        tensors = tuple(to_input_tensor(rgb, spec) for spec in self.specs)
        grid = None
        if self.depth_spec is not None and depth is not None:
            spec = self.depth_spec
            if isinstance(depth, np.ndarray) and depth.shape == (1, 1, spec.height, spec.width):
                grid = depth
            else:
                grid = depth_input(depth, (rgb.shape[1], rgb.shape[0]), spec)
        return PreparedImage(tensors, 0.0, 0.0, grid)

    @abstractmethod
    def forward(self, prepared: PreparedImage) -> ModelOutputs: ...

    def post_process(self, prepared: PreparedImage, outputs: ModelOutputs) -> Answer:
        probabilities = [float(p) for p in outputs.probabilities]
        prediction = predict_from_probabilities(probabilities, self.class_names, outputs.in_domain_score)
        anomaly = detection = None
        if self.anomaly_spec is not None:
            anomaly = anomaly_from(outputs, self.anomaly_spec)
            label_index = self.class_names.index(anomaly.label)
            prediction = Prediction(
                anomaly.label, label_index, anomaly.confidence, anomaly.raw_confidence, prediction.p_out
            )
        elif self.detection_spec is not None:
            detection = self.detection_from(outputs)
            prediction = Prediction(
                detection.label, 0, detection.confidence, detection.raw_confidence, prediction.p_out
            )
        return Answer(
            prediction=prediction,
            # A detection model answers boxes, not class probabilities.
            probabilities={} if detection else dict(zip(self.class_names, probabilities, strict=True)),
            in_domain_score=outputs.in_domain_score,
            decode_s=prepared.decode_s,
            preprocess_s=prepared.preprocess_s,
            model_s=outputs.model_s,
            anomaly=anomaly,
            detection=detection,
        )

    def detection_from(self, outputs: ModelOutputs) -> DetectionResult:
        """The common detection post-processor on the primary's heatmap, sizes and offsets."""
        assert self.detection_spec is not None
        if len(outputs.extras) != 3:
            raise PackageError("detection primary: the model must give a heatmap, box sizes and box offsets")
        heat, size, offset = (np.asarray(x, dtype=np.float32) for x in outputs.extras)
        if heat.ndim != 4 or size.shape[:2] != (1, 2) or offset.shape != size.shape or heat.shape[2:] != size.shape[2:]:
            raise PackageError(
                f"detection primary: expected 1xCxHxW, 1x2xHxW and 1x2xHxW maps, got {heat.shape}, {size.shape}, {offset.shape}"
            )
        return interpret_detection(
            heat[0],
            size[0],
            offset[0],
            class_names=self.class_names,
            spec=self.detection_spec,
            mode=self.primary.pipeline.mode,
            in_domain=outputs.in_domain_score,
        )

    def primary_values(self, raw: np.ndarray, extras: list[np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """(class probabilities, extra maps) from the primary's outputs: a detection
        model has no probabilities; its heatmap joins the extras."""
        if self.detection_spec is not None:
            return np.ones(len(self.class_names), dtype=np.float32), (raw, *extras)
        return probabilities_from(raw, self.class_names, "primary"), tuple(extras)

    def tensor_for(self, prepared: PreparedImage, spec: InputSpec) -> np.ndarray:
        return prepared.tensors[self.specs.index(spec)]

    def forward_head(self, features: dict[str, np.ndarray], backbone_s: float) -> ModelOutputs:
        """This detector's head on features its shared backbone computed (``model_s``
        counts the backbone run once for each detector that used it)."""
        head = self.head
        assert head is not None
        start = time.perf_counter()
        raw, *rest = head.session.run(list(head.outputs), {name: features[name] for name in head.backbone.cut})
        in_domain = None
        if head.has_oodd:
            score, *rest = rest
            in_domain = in_domain_from(score, "oodd")
        probabilities, maps = self.primary_values(raw, rest)
        return ModelOutputs(probabilities, in_domain, model_s=backbone_s + time.perf_counter() - start, extras=maps)

    def warm_up(self) -> None:
        """One run on a blank image: checks output shapes before the model serves, and
        pays ONNX Runtime's first-run allocations here instead of on a request."""
        tensors = tuple(np.zeros((1, 3, s.height, s.width), dtype=np.float32) for s in self.specs)
        spec = self.depth_spec
        depth = None if spec is None else np.full((1, 1, spec.height, spec.width), 500.0, dtype=np.float32)
        outputs = self.forward(PreparedImage(tensors, 0.0, 0.0, depth))
        if self.anomaly_spec is not None:
            anomaly_from(outputs, self.anomaly_spec)
        if self.detection_spec is not None:
            self.detection_from(outputs)


def probabilities_from(value: np.ndarray, class_names: tuple[str, ...], what: str) -> np.ndarray:
    flat = np.asarray(value, dtype=np.float32).reshape(-1)
    if flat.shape[0] != len(class_names):
        raise PackageError(f"{what}: the model gives {flat.shape[0]} probabilities for {len(class_names)} classes")
    if not np.all(np.isfinite(flat)):
        raise PackageError(f"{what}: the model gives non-finite probabilities")
    return np.clip(flat, 0.0, 1.0)


def anomaly_from(outputs: ModelOutputs, spec: AnomalySpec) -> AnomalyResult:
    """The common anomaly post-processor on the primary's score and map outputs."""
    if len(outputs.extras) != 2:
        raise PackageError("anomaly primary: the model must give an anomaly score and an anomaly map")
    score, amap = outputs.extras
    flat = np.asarray(score, dtype=np.float32).reshape(-1)
    amap = np.asarray(amap, dtype=np.float32)
    if flat.shape[0] != 1 or amap.ndim != 4 or not np.isfinite(flat[0]):
        raise PackageError(f"anomaly primary: expected one score and a 1x1xHxW map, got {flat.shape} and {amap.shape}")
    return interpret(
        float(flat[0]),
        amap[0, 0],
        threshold=spec.threshold,
        cuts=spec.severity_cuts,
        in_domain=outputs.in_domain_score,
    )


def in_domain_from(value: np.ndarray, what: str) -> float:
    flat = np.asarray(value, dtype=np.float32).reshape(-1)
    if flat.shape[0] != 1 or not np.isfinite(flat[0]):
        raise PackageError(f"{what}: the OODD model must give one finite in-domain score, got shape {flat.shape}")
    return float(min(max(flat[0], 0.0), 1.0))


class SeparateDetectorModel(DetectorModel):
    """One session per package: two backbone passes when both exist."""

    def __init__(
        self,
        primary: Part,
        oodd: Part | None,
        primary_session: ort.InferenceSession,
        oodd_session: ort.InferenceSession | None,
        **kwargs: object,
    ) -> None:
        super().__init__(primary, oodd, **kwargs)  # type: ignore[arg-type]
        self._primary_session = primary_session
        inputs = [tensor.name for tensor in primary_session.get_inputs()]
        self._depth_feed = None if self.depth_spec is None else self.depth_spec.tensor_name
        if self._depth_feed is not None and (self._depth_feed not in inputs or len(inputs) != 2):
            raise PackageError(
                f"primary v{primary.version}: pipeline_config has a depth input {self._depth_feed!r}, but the "
                f"model's inputs are {inputs} (expected the image and {self._depth_feed!r})"
            )
        self._primary_feed = next(name for name in inputs if name != self._depth_feed)
        self._primary_outputs = [primary.pipeline.output, *self.extra_outputs]
        self._oodd_session = oodd_session
        self._oodd_feed = oodd_session.get_inputs()[0].name if oodd_session is not None else ""
        self._oodd_outputs = [oodd.pipeline.output] if oodd is not None else []

    def forward(self, prepared: PreparedImage) -> ModelOutputs:
        start = time.perf_counter()
        feed = {self._primary_feed: self.tensor_for(prepared, self.primary.pipeline.input)}
        if self._depth_feed is not None and prepared.depth is not None:  # pre_process refuses a missing one
            feed[self._depth_feed] = prepared.depth
        raw, *extras = self._primary_session.run(self._primary_outputs, feed)
        probabilities, maps = self.primary_values(raw, extras)
        in_domain = None
        if self._oodd_session is not None and self.oodd is not None:
            tensor = self.tensor_for(prepared, self.oodd.pipeline.input)
            (score,) = self._oodd_session.run(self._oodd_outputs, {self._oodd_feed: tensor})
            in_domain = in_domain_from(score, "oodd")
        return ModelOutputs(probabilities, in_domain, model_s=time.perf_counter() - start, extras=maps)


class FusedDetectorModel(DetectorModel):
    """Primary and OODD heads on one shared backbone pass: one session, two outputs."""

    def __init__(
        self,
        primary: Part,
        oodd: Part,
        session: ort.InferenceSession,
        primary_output: str,
        oodd_output: str,
        **kwargs: object,
    ) -> None:
        super().__init__(primary, oodd, **kwargs)  # type: ignore[arg-type]
        if self.depth_spec is not None:
            raise PackageError("a primary with a depth input shares no backbone pass: it cannot be fused")
        self._session = session
        self._feed = session.get_inputs()[0].name
        self._outputs = [primary_output, oodd_output, *self.extra_outputs]

    @property
    def fused(self) -> bool:
        return True

    def forward(self, prepared: PreparedImage) -> ModelOutputs:
        start = time.perf_counter()
        raw, score, *extras = self._session.run(self._outputs, {self._feed: prepared.tensors[0]})
        probabilities, maps = self.primary_values(raw, extras)
        return ModelOutputs(
            probabilities, in_domain_from(score, "oodd"), model_s=time.perf_counter() - start, extras=maps
        )


class SharedBackbone:
    """One backbone session, run once per image for every detector whose graph cuts to it."""

    def __init__(self, key: str, session: ort.InferenceSession, image_input: str, cut: tuple[str, ...]) -> None:
        self.key = key
        self.session = session
        self.image_input = image_input
        self.cut = cut
        # Its features of a blank image, by input size: each new head warms up on them.
        self._blank: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def blank_features(self, height: int, width: int) -> dict[str, np.ndarray]:
        """The features of a blank image, computed once per size (each model load reuses them)."""
        features = self._blank.get((height, width))
        if features is None:
            features = self.run(np.zeros((1, 3, height, width), dtype=np.float32))
            self._blank[(height, width)] = features
        return features

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.cut, self.session.run(list(self.cut), {self.image_input: tensor}), strict=True))


@dataclass(frozen=True)
class HeadRun:
    backbone: SharedBackbone
    session: ort.InferenceSession
    outputs: tuple[str, ...]  # primary output, the OODD output when has_oodd, the extras
    has_oodd: bool


# (graph bytes, backbone output names) -> SplitGraph (intellioptics_common.onnx_split).
Splitter = Callable[[bytes, tuple[str, ...]], "SplitGraph"]


class SharedBackbones:
    """The backbone sessions of one process's loaded detectors, one per distinct backbone
    computation (the key is a hash of the cut graph, not the name a package gives it).
    Held weakly: a backbone goes once the last detector that used it is evicted."""

    def __init__(self, runtime: RuntimeOptions, splitter: Splitter | None = None) -> None:
        self._runtime = runtime
        self._splitter = splitter if splitter is not None else default_splitter()
        self._lock = threading.Lock()
        self._by_key: weakref.WeakValueDictionary[str, SharedBackbone] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._by_key)

    def attach(self, model: DetectorModel, graph_bytes: bytes, has_oodd: bool) -> None:
        """Give ``model`` a head on a shared backbone; an optimisation, so a graph that
        does not cut is logged and served as before."""
        backbone = model.primary.pipeline.backbone
        if self._splitter is None or backbone is None or model.depth_spec is not None:
            return
        cut = tuple(name.strip() for name in backbone.output.split(",") if name.strip())
        try:
            split = self._splitter(graph_bytes, cut)
            with self._lock:
                shared = self._by_key.get(split.key)
                if shared is None:
                    session = self._runtime.session(split.backbone, f"shared backbone {backbone.id}")
                    shared = SharedBackbone(split.key, session, split.image_input, split.cut)
                    self._by_key[split.key] = shared
            head = self._runtime.session(split.head, f"head of {model.detector_id}")
            outputs = [model.primary.pipeline.output]
            if has_oodd and model.oodd is not None:
                outputs.append(model.oodd.pipeline.output)
            outputs += list(model.extra_outputs)
            run = HeadRun(shared, head, tuple(outputs), has_oodd and model.oodd is not None)
            spec = model.primary.pipeline.input
            model.head = run
            # Checks the outputs and pays the head's first-run allocations now.
            model.forward_head(shared.blank_features(spec.height, spec.width), 0.0)
        except Exception as exc:  # the optimisation failing leaves the plain path
            model.head = None
            logger.warning("%s: no shared backbone run (%s); it is answered alone", model.detector_id, exc)


def default_splitter() -> Splitter | None:
    try:
        module = importlib.import_module("intellioptics_common.onnx_split")
    except ImportError:
        return None
    return getattr(module, "split_at_backbone", None)


@dataclass(frozen=True)
class ManyAnswers:
    answers: list[Answer | IntelliOpticsError]  # in the order of the models; a refusal in place of an answer
    decode_s: float
    backbone_runs: int  # shared backbone passes plus the models answered alone


def answer_many(models: list[DetectorModel], image: bytes, limits: ImageLimits) -> ManyAnswers:
    """Every model's answer on one image, decoded once per draft size (normally once) and
    each shared backbone run once. A model answers as its ``predict`` would."""
    answers: list[Answer | IntelliOpticsError | None] = [None] * len(models)
    decode_s = 0.0
    runs = 0
    by_draft: dict[tuple[int, int], list[int]] = {}
    for index, model in enumerate(models):
        by_draft.setdefault(model.draft_size, []).append(index)
    for draft, indices in by_draft.items():
        start = time.perf_counter()
        rgb = decode_image(image, limits, draft_size=draft).rgb
        decode_s += time.perf_counter() - start
        groups: dict[tuple[str, InputSpec], list[int]] = {}
        for index in indices:
            model = models[index]
            if model.head is not None and model.depth_spec is None:
                groups.setdefault((model.head.backbone.key, model.primary.pipeline.input), []).append(index)
                continue
            try:
                runs += 1
                answers[index] = _answer_alone(model, rgb)
            except IntelliOpticsError as exc:
                answers[index] = exc
        for (_, spec), members in groups.items():
            start = time.perf_counter()
            tensor = to_input_tensor(rgb, spec)
            prepared = PreparedImage((tensor,), 0.0, time.perf_counter() - start)
            head = models[members[0]].head
            assert head is not None
            start = time.perf_counter()
            features = head.backbone.run(tensor)
            backbone_s = time.perf_counter() - start
            runs += 1
            for index in members:
                model = models[index]
                try:
                    answers[index] = model.post_process(prepared, model.forward_head(features, backbone_s))
                except IntelliOpticsError as exc:
                    answers[index] = exc
    done = [a for a in answers if a is not None]
    assert len(done) == len(models)
    return ManyAnswers(done, decode_s, runs)


def _answer_alone(model: DetectorModel, rgb: np.ndarray) -> Answer:
    if model.depth_spec is not None:
        raise model.depth_required("ask for it alone, with an `image` part and a `depth` part")
    start = time.perf_counter()
    prepared = model.prepare(rgb)
    prepared = PreparedImage(prepared.tensors, 0.0, time.perf_counter() - start, prepared.depth)
    return model.post_process(prepared, model.forward(prepared))


def default_fuser() -> Fuser | None:
    """The shared-backbone fuser of this library, when this install has ``onnx`` (the edge
    and the training machine do; a part without it runs two sessions)."""
    try:
        module = importlib.import_module("intellioptics_common.onnx_fuse")
    except ImportError:
        return None
    return getattr(module, "fuse_primary_oodd", None)


def build_model(
    primary: Part,
    primary_bytes: bytes,
    oodd: Part | None,
    oodd_bytes: bytes | None,
    runtime: RuntimeOptions,
    *,
    fuser: Fuser | None = None,
    disk_state: DiskState | None = None,
    backbones: SharedBackbones | None = None,
) -> DetectorModel:
    """Sessions for a version's graphs, fused into one backbone pass when both name the
    same backbone and a fuser is given; output names checked, warmed up, ready to serve.
    With ``backbones``, the served graph (the fused one, or a lone primary) also gets a
    head on the registry's shared backbone, for :func:`answer_many`."""
    state = disk_state or DiskState(primary.version, None if oodd is None else oodd.version)
    size = len(primary_bytes) + len(oodd_bytes or b"")
    # A depth primary has a second input: it shares no backbone run (its package names none).
    depthless = primary.pipeline.depth is None
    if fuser is not None and oodd is not None and oodd_bytes and depthless and _shares_backbone(primary, oodd):
        fused = _try_fuse(primary, oodd, primary_bytes, oodd_bytes, runtime, fuser, state, backbones)
        if fused is not None:
            return fused
    primary_session = runtime.session(primary_bytes, f"primary v{primary.version}")
    oodd_session = None
    if oodd is not None:
        if not oodd_bytes:
            raise PackageError(f"oodd v{oodd.version}: no model bytes")
        oodd_session = runtime.session(oodd_bytes, f"oodd v{oodd.version}")
    _check_outputs(primary_session, primary)
    if oodd_session is not None and oodd is not None:
        _check_outputs(oodd_session, oodd)
    model = SeparateDetectorModel(primary, oodd, primary_session, oodd_session, disk_state=state, size_bytes=size)
    model.warm_up()
    if backbones is not None and oodd is None:  # an unfused OODD has its own backbone run
        backbones.attach(model, primary_bytes, has_oodd=False)
    return model


def _shares_backbone(primary: Part, oodd: Part) -> bool:
    a, b = primary.pipeline.backbone, oodd.pipeline.backbone
    return (
        a is not None
        and b is not None
        and (a.id, a.sha256, a.output) == (b.id, b.sha256, b.output)
        and primary.pipeline.input == oodd.pipeline.input
    )


def _try_fuse(
    primary: Part,
    oodd: Part,
    primary_bytes: bytes,
    oodd_bytes: bytes,
    runtime: RuntimeOptions,
    fuser: Fuser,
    state: DiskState,
    backbones: SharedBackbones | None,
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
        if backbones is not None:
            backbones.attach(model, fused_bytes, has_oodd=True)
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


def _check_outputs(session: ort.InferenceSession, part: Part) -> None:
    names = [output.name for output in session.get_outputs()]
    wanted = [part.pipeline.output, *extra_outputs_of(part.pipeline)]
    for output in wanted:
        if output not in names:
            raise PackageError(f"{part.kind} v{part.version} has no output {output!r} (it has {names})")
