"""Tiny but real ONNX models written as real model packages, and an in-process app.

The models are built with ``onnx.helper``: a 3x3 convolution "backbone" (output
``feat``, named in ``pipeline_config.backbone``) with a softmax classifier head
(primary) or a sigmoid in-domain head (OODD). ``yes_bias`` pushes the primary towards
YES (positive) or NO (negative), so a test can tell versions apart by their answers.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from intellioptics_common.model_package import (
    BackboneRef,
    InputSpec,
    PipelineConfig,
    PredictorMetadata,
    sha256_bytes,
    write_version,
)
from intellioptics_inference.app import create_app
from intellioptics_inference.settings import InferenceSettings

SPEC = InputSpec(height=32, width=32)
_BACKBONE_WEIGHTS = np.random.default_rng(7).normal(0, 0.05, size=(4, 3, 3, 3)).astype(np.float32)
BACKBONE = BackboneRef(id="tiny-conv", sha256=sha256_bytes(_BACKBONE_WEIGHTS.tobytes()), output="feat")


def tiny_model(
    kind: str, *, yes_bias: float = 0.0, num_classes: int = 2, in_domain_bias: float = 2.0, padding_floats: int = 0
) -> bytes:
    """image (1x3x32x32) -> conv -> relu ("feat") -> GAP -> Gemm -> softmax | sigmoid.

    As in the training library's exports, backbone names are the same in both kinds and
    head names carry a ``<kind>/`` prefix, so the two graphs can be fused.
    ``padding_floats`` adds an unused initializer, to make the file as big as a test needs.
    """
    rng = np.random.default_rng(11)
    outputs = num_classes if kind == "primary" else 1
    weights = rng.normal(0, 0.5, size=(4, outputs)).astype(np.float32)
    h = f"{kind}/"
    if kind == "primary":
        bias = np.zeros(outputs, dtype=np.float32)
        bias[-1] = yes_bias
        head = [helper.make_node("Softmax", [h + "logits"], ["probabilities"], axis=1)]
        out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, outputs])
    else:
        bias = np.full(outputs, in_domain_bias, dtype=np.float32)
        head = [helper.make_node("Sigmoid", [h + "logits"], ["in_domain"])]
        out = helper.make_tensor_value_info("in_domain", TensorProto.FLOAT, [1, 1])
    nodes = [
        helper.make_node("Conv", ["image", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("GlobalAveragePool", ["feat"], [h + "pooled"]),
        helper.make_node("Flatten", [h + "pooled"], [h + "flat"]),
        helper.make_node("Gemm", [h + "flat", h + "head_w", h + "head_b"], [h + "logits"]),
        *head,
    ]
    padding = [numpy_helper.from_array(np.ones(padding_floats, np.float32), h + "padding")] if padding_floats else []
    graph = helper.make_graph(
        nodes,
        f"tiny_{kind}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SPEC.height, SPEC.width])],
        [out],
        initializer=[
            numpy_helper.from_array(_BACKBONE_WEIGHTS, "conv_w"),
            numpy_helper.from_array(weights, h + "head_w"),
            numpy_helper.from_array(bias, h + "head_b"),
            *padding,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_package(
    models_dir: Path,
    detector_id: str,
    kind: str,
    *,
    version: int | None = None,
    yes_bias: float = 0.0,
    class_names: tuple[str, ...] = ("NO", "YES"),
    in_domain_bias: float = 2.0,
    model_bytes: bytes | None = None,
    backbone: BackboneRef = BACKBONE,
) -> Path:
    mode = "BINARY" if class_names == ("NO", "YES") else "MULTI_CLASS"
    pipeline = PipelineConfig(
        kind=kind,  # type: ignore[arg-type]
        mode=mode,
        class_names=class_names,
        input=SPEC,
        output="probabilities" if kind == "primary" else "in_domain",
        backbone=backbone,
    )
    metadata = PredictorMetadata(
        detector_id=detector_id,
        kind=kind,
        trainer="test",
        backbone_id=BACKBONE.id,
        training_set_size=10,  # type: ignore[arg-type]
    )
    data = model_bytes or tiny_model(
        kind, yes_bias=yes_bias, num_classes=len(class_names), in_domain_bias=in_domain_bias
    )
    return write_version(
        models_dir,
        detector_id,
        kind,  # type: ignore[arg-type]
        model_bytes=data,
        pipeline=pipeline,
        metadata=metadata,
        model_id=f"{detector_id}-{kind}-{version or 'next'}-{yes_bias:+g}",
        version=version,
    )


def write_detector(
    models_dir: Path, detector_id: str, *, yes_bias: float = 3.0, oodd: bool = True, **kw: object
) -> None:
    write_package(models_dir, detector_id, "primary", yes_bias=yes_bias, **kw)  # type: ignore[arg-type]
    if oodd:
        write_package(models_dir, detector_id, "oodd")


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    return directory


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_client(models_dir: Path) -> AppFactory:
    """``async with app_client(**settings) as client``: the real app, lifespan included."""

    @contextlib.asynccontextmanager
    async def factory(loader_factory: object = None, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        settings = InferenceSettings(models_dir=models_dir, model_poll_interval_s=0.2, **overrides)  # type: ignore[arg-type]
        kwargs = {"loader_factory": loader_factory} if loader_factory is not None else {}
        app = create_app(settings, **kwargs)  # type: ignore[arg-type]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://inference") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    return factory


@pytest.fixture
def kit() -> SimpleNamespace:
    """The builders above, for test modules (conftest is not importable by name)."""
    return SimpleNamespace(
        write_package=write_package,
        write_detector=write_detector,
        jpeg=jpeg_bytes,
        tiny_model=tiny_model,
        spec=SPEC,
        backbone=BACKBONE,
    )
