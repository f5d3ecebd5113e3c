"""Start the edge as real processes for tests and benchmarks: inference service, edge API
and the nginx gateway, on free ports, with tiny but real ONNX model packages.

    with edge_stack(tmp_path, detectors=[...]) as stack:
        Groundlight(endpoint=stack.gateway_url, api_token=stack.token)

``python -m tests.support.edge_stack [bench options]`` is ``make bench-edge``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from intellioptics_common.model_package import InputSpec, PipelineConfig, PredictorMetadata, write_version
from tests.support.procs import REPO_ROOT, free_port, nginx_process, python_module, running, wait_http

if TYPE_CHECKING:
    from intellioptics_inference.bench import Served

EDGE_TOKEN = "edge_test_token_0123456789abcdef"


def brightness_model(class_names: Sequence[str], size: int = 32, gain: float = 2.0) -> bytes:
    """A real ONNX classifier that needs no training: mean channel intensity → softmax.

    Binary (NO, YES): a white image is a confident YES, black a confident NO, mid-grey a
    coin toss. With one class per colour channel it answers the dominant colour.
    """
    count = len(class_names)
    if count == 2:
        weights = np.array([[-gain, gain]] * 3, dtype=np.float32)
    elif count == 3:
        weights = np.eye(3, dtype=np.float32) * gain * 3
    else:
        raise ValueError("brightness_model supports 2 or 3 classes")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("MatMul", ["features", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, count])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def install_brightness_model(
    models_dir: Path, detector_id: str, class_names: Sequence[str] = ("NO", "YES"), size: int = 32
) -> Path:
    mode = "BINARY" if tuple(class_names) == ("NO", "YES") else "MULTI_CLASS"
    return write_version(
        models_dir,
        detector_id,
        "primary",
        model_bytes=brightness_model(class_names, size),
        pipeline=PipelineConfig(
            kind="primary", mode=mode, class_names=tuple(class_names), input=InputSpec(height=size, width=size)
        ),
        metadata=PredictorMetadata(
            detector_id=detector_id, kind="primary", trainer="test-brightness", backbone_id="none", training_set_size=0
        ),
        model_id=f"brightness-{detector_id}",
    )


def load_nginx_renderer() -> ModuleType:
    """edge/nginx/render.py is a stdlib-only script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location("intellioptics_nginx_render", REPO_ROOT / "edge/nginx/render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class EdgeStack:
    gateway_url: str
    edge_api_url: str
    inference_url: str
    token: str
    config_path: Path
    models_dir: Path
    log_dir: Path


@contextlib.contextmanager
def edge_stack(
    base_dir: Path,
    edge_config: dict,
    models: dict[str, Sequence[str]] | None = None,
    *,
    cloud_url: str = "",
    extra_env: dict[str, str] | None = None,
    access_log: str = "off",
    models_dir: Path | None = None,
) -> Iterator[EdgeStack]:
    """Inference + edge API + nginx, offline unless ``cloud_url``; ``models`` maps
    detector ids to class names of a brightness model to install (into ``models_dir``,
    which may already hold real packages)."""
    models_dir = models_dir or base_dir / "models"
    log_dir = base_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for detector_id, class_names in (models or {}).items():
        install_brightness_model(models_dir, detector_id, class_names)
    config_path = base_dir / "edge-config.yaml"
    config_path.write_text(yaml.safe_dump(edge_config, sort_keys=False))
    inference_port, edge_port, gateway_port = free_port(), free_port(), free_port()
    common_env = {"INTELLIOPTICS_ENVIRONMENT": "test", "INTELLIOPTICS_LOG_LEVEL": "WARNING", **(extra_env or {})}
    inference = python_module(
        "inference",
        "intellioptics_inference",
        log_dir,
        {
            **common_env,
            "INTELLIOPTICS_MODELS_DIR": str(models_dir),
            "INTELLIOPTICS_INFERENCE_PORT": str(inference_port),
        },
    )
    edge_api = python_module(
        "edge-api",
        "intellioptics_edge",
        log_dir,
        {
            **common_env,
            "INTELLIOPTICS_EDGE_API_HOST": "127.0.0.1",
            "INTELLIOPTICS_EDGE_API_PORT": str(edge_port),
            "INTELLIOPTICS_INFERENCE_URL": f"http://127.0.0.1:{inference_port}",
            "INTELLIOPTICS_CLOUD_URL": cloud_url,
            "INTELLIOPTICS_EDGE_DATA_DIR": str(base_dir / "edge-data"),
            "INTELLIOPTICS_EDGE_CONFIG": str(config_path),
            "INTELLIOPTICS_EDGE_TOKENS": EDGE_TOKEN,
        },
    )
    prefix = base_dir / "nginx"
    conf = load_nginx_renderer().render(
        prefix, port=gateway_port, edge_api=f"127.0.0.1:{edge_port}", cloud_url=cloud_url, access_log=access_log
    )
    gateway = nginx_process(conf, prefix)
    with running(inference), running(edge_api), running(gateway):
        wait_http(f"http://127.0.0.1:{inference_port}/health/live", timeout=60, process=inference)
        wait_http(f"http://127.0.0.1:{edge_port}/health/live", timeout=60, process=edge_api)
        wait_http(f"http://127.0.0.1:{gateway_port}/health/live", timeout=30, process=gateway)
        yield EdgeStack(
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            edge_api_url=f"http://127.0.0.1:{edge_port}",
            inference_url=f"http://127.0.0.1:{inference_port}",
            token=EDGE_TOKEN,
            config_path=config_path,
            models_dir=models_dir,
            log_dir=log_dir,
        )


@contextlib.contextmanager
def serve_edge_bench(models_dir: Path, work_dir: Path, env: dict[str, str]) -> Iterator[Served]:
    """``intellioptics_inference.bench``'s serve for the whole edge: inference, edge API
    and nginx (the real gateway config) on ``models_dir``, the bench detector answered on
    the edge (preset ``no_cloud``, no audits), offline."""
    from intellioptics_edge.bench import ImageQueryPoster
    from intellioptics_inference.bench import DETECTOR, Layer, Served, bench_jpeg

    config = {
        "global_config": {"confident_audit_rate": 0},
        "detectors": [
            {"detector_id": DETECTOR, "edge_inference_config": "no_cloud", "name": "bench", "query": "bench?"}
        ],
    }
    with edge_stack(work_dir, config, models_dir=models_dir, extra_env=env) as stack:
        wait_http(f"{stack.inference_url}/detectors/{DETECTOR}/ready", timeout=120)
        edge_api = ImageQueryPoster(stack.edge_api_url, DETECTOR, stack.token, bench_jpeg())
        gateway = ImageQueryPoster(stack.gateway_url, DETECTOR, stack.token, bench_jpeg())
        # Once through the whole path, so that a misconfigured stack fails here and not as
        # a table of errors.
        error = gateway()
        gateway.close_thread()
        if error is not None:
            raise RuntimeError(f"the edge did not answer the bench detector: {error}")
        layers = (Layer("edge API", edge_api), Layer("nginx → edge API", gateway))
        yield Served(stack.inference_url, layers=layers, others=(("edge API", stack.edge_api_url),))


def run_edge_bench(argv: list[str] | None = None) -> int:
    """``make bench``'s edge part: ``intellioptics_inference.bench`` (same options) with
    the edge API and nginx measured in front of the inference service."""
    from intellioptics_inference.bench import main

    return main(argv, serve=serve_edge_bench, command="make bench-edge")


if __name__ == "__main__":
    raise SystemExit(run_edge_bench())
