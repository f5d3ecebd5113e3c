"""Start the edge as real processes for tests and benchmarks: inference service, edge API
and the nginx gateway, on free ports, with tiny but real ONNX model packages.

    with edge_stack(tmp_path, detectors=[...]) as stack:
        Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from intellioptics_common.model_package import InputSpec, PipelineConfig, PredictorMetadata, write_version
from tests.support.procs import REPO_ROOT, free_port, nginx_process, python_module, running, wait_http

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


def run_edge_bench(
    base_dir: Path,
    image: bytes,
    *,
    detector_id: str = "det_" + "Bench0Brightness0Detector01",
    models_dir: Path | None = None,
    concurrencies: Sequence[int] = (1, 4, 16),
    requests_per_level: int = 200,
) -> list:
    """``make bench`` entry: the whole edge on free ports, one detector, answered on the edge.

    Without ``models_dir`` a brightness model is installed for ``detector_id``; pass a
    directory holding a real package for that detector to measure a real model.
    """
    from intellioptics_edge.bench import bench_edge

    config = {
        "global_config": {"confident_audit_rate": 0},
        "detectors": [
            # always_return: every answer comes from the edge model, none waits on escalation
            {"detector_id": detector_id, "edge_inference_config": "no_cloud", "name": "bench", "query": "bench?"}
        ],
    }
    models = None if models_dir is not None else {detector_id: ("NO", "YES")}
    with edge_stack(base_dir, config, models, models_dir=models_dir) as stack:
        wait_http(f"{stack.inference_url}/detectors/{detector_id}/ready", timeout=120)
        return bench_edge(
            gateway_url=stack.gateway_url,
            edge_api_url=stack.edge_api_url,
            token=stack.token,
            detector_id=detector_id,
            image=image,
            concurrencies=concurrencies,
            requests_per_level=requests_per_level,
        )
