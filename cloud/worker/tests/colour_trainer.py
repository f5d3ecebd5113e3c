"""A tiny but real trainer for tests: one mean colour per class, exported as a genuine
ONNX graph (primary: softmax over colour distances; OODD: constant in-domain), for images
whose class is their colour. Loaded by ``conftest.py`` and by ``colour_worker.py`` (a
worker process for the process-level tests) by file path: test modules are not importable
packages under ``--import-mode=importlib``."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper
from PIL import Image

from intellioptics_common.model_package import InputSpec, PipelineConfig
from intellioptics_common.preprocessing import load_input_tensor
from intellioptics_worker.cloud import EpochReport
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.scoring import ModelFiles, Scorer
from intellioptics_worker.training import CancelCheck, ProgressCallback, TrainedVersion

SPEC = InputSpec(height=16, width=16)
COLORS = {"NO": (40, 60, 200), "YES": (200, 60, 40), "clean": (40, 200, 60), "dent": (200, 200, 40)}


def color_png(label: str, seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.array(COLORS[label], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def mean_color_models(centroids: np.ndarray, class_names: Sequence[str]) -> ModelFiles:
    """Primary: softmax(50 * (2 x.c_k - |c_k|^2)) over the image's mean colour; OODD: constant 1."""
    k = len(class_names)
    weights = (2 * centroids.T * 50).astype(np.float32)  # 3 x K
    bias = (-(centroids**2).sum(axis=1) * 50).astype(np.float32)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, None, None])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, k])
    primary = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "W"], ["mw"]),
            helper.make_node("Add", ["mw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "primary",
        [image],
        [probabilities],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [3, k], weights.ravel()),
            helper.make_tensor("b", TensorProto.FLOAT, [k], bias),
        ],
    )
    in_domain = helper.make_tensor_value_info("in_domain", TensorProto.FLOAT, [1])
    oodd = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["m", "zero"], ["z"]),
            helper.make_node("Add", ["z", "one"], ["in_domain"]),
        ],
        "oodd",
        [image],
        [in_domain],
        [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    opset = [helper.make_opsetid("", 17)]
    mode = "BINARY" if tuple(class_names) == ("NO", "YES") else "MULTI_CLASS"
    return ModelFiles(
        primary=helper.make_model(primary, opset_imports=opset, ir_version=8).SerializeToString(),
        primary_config=PipelineConfig(kind="primary", mode=mode, class_names=tuple(class_names), input=SPEC),
        oodd=helper.make_model(oodd, opset_imports=opset, ir_version=8).SerializeToString(),
        oodd_config=PipelineConfig(
            kind="oodd", mode=mode, class_names=tuple(class_names), input=SPEC, output="in_domain"
        ),
    )


@dataclass
class ColorTrainer:
    """Fits one mean colour per class. ``shuffle_labels`` makes a deliberately bad model."""

    shuffle_labels: bool = False
    epochs: int = 3
    epoch_s: float = 0.0  # pretend each epoch takes this long (process tests need time to act mid-training)
    calls: list[int] = field(default_factory=list)

    def train(
        self,
        images: Sequence[LabeledImage],
        *,
        detector_id: str,
        mode: str,
        class_names: Sequence[str],
        trainer: str,
        threshold: float,
        folds: int,
        on_progress: ProgressCallback,
        cancel_check: CancelCheck,
        max_objects: int | None = None,
        depth: bool = False,
    ) -> TrainedVersion:
        self.calls.append(len(images))
        labels = [image.label for image in images]
        if self.shuffle_labels:
            labels = list(np.random.default_rng(7).permutation(labels))
        features = np.stack([load_input_tensor(image.image, SPEC).mean(axis=(2, 3))[0] for image in images])
        # Cross-fitting as the library does it: image i is answered by centroids fitted without its fold.
        k = max(2, min(folds, min(labels.count(name) for name in set(labels))))
        fold_of = [i % k for i in range(len(images))]
        out_of_fold = {}
        for fold in range(k):
            fit = [i for i in range(len(images)) if fold_of[i] != fold]
            scorer = Scorer(
                mean_color_models(_centroids(features[fit], [labels[i] for i in fit], class_names), class_names)
            )
            for i in range(len(images)):
                if fold_of[i] == fold:
                    out_of_fold[images[i].image_query_id] = scorer.score(images[i].image)
        for epoch in range(1, self.epochs + 1):
            if cancel_check():
                raise RuntimeError("cancel_check returned True")
            time.sleep(self.epoch_s)
            on_progress(epoch / self.epochs, f"epoch {epoch}", EpochReport(epoch, loss=1.0 / epoch, accuracy=0.9))
        files = mean_color_models(_centroids(features, labels, class_names), class_names)
        metadata = {"detector_id": detector_id, "kind": "primary", "trainer": "color", "backbone_id": "none"}
        return TrainedVersion(files, metadata, {**metadata, "kind": "oodd"}, "color", out_of_fold, k)


def _centroids(features: np.ndarray, labels: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    return np.stack(
        [
            features[[i for i, y in enumerate(labels) if y == name]].mean(axis=0)
            if name in labels
            else np.full(3, 99.0)
            for name in class_names
        ]
    )
