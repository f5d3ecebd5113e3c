"""The model file checks every part runs (intellioptics_common.model_check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from intellioptics_common.errors import PackageError, UnsafeModelError
from intellioptics_common.model_check import ModelLimits, check_model_bytes, trial_run
from tests.support import hostile_models
from tests.support.edge_stack import brightness_model

BACKBONE = Path(__file__).resolve().parents[2] / "data" / "backbones" / "efficientnet_lite0" / "backbone.onnx"


def _external(tensor: onnx.TensorProto, location: str = "Makefile") -> onnx.TensorProto:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _constant_model(value: onnx.TensorProto) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["out"], value=value)],
        "c",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_our_own_graphs_pass() -> None:
    summary = check_model_bytes(brightness_model(["NO", "YES"]))
    assert summary.ops == {"GlobalAveragePool", "Flatten", "MatMul", "Softmax"}
    trial_run(brightness_model(["NO", "YES"]), height=32, width=32)


@pytest.mark.skipif(not BACKBONE.is_file(), reason="make backbone builds data/backbones")
def test_the_real_backbone_passes_the_static_checks_and_the_trial_run() -> None:
    data = BACKBONE.read_bytes()
    summary = check_model_bytes(data)
    assert "Conv" in summary.ops and summary.tensor_bytes > 10_000_000
    trial_run(data, "backbone", height=320, width=320)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: hostile_models.external_data_model("Makefile"), id="initializer"),
        pytest.param(
            lambda: _constant_model(_external(numpy_helper.from_array(np.zeros(2, np.float32), "v"))), id="constant"
        ),
    ],
)
def test_external_data_anywhere_is_refused(model) -> None:
    with pytest.raises(UnsafeModelError, match="external data"):
        check_model_bytes(model())


def test_sparse_initializers_with_external_data_are_refused() -> None:
    model = onnx.load_from_string(brightness_model(["NO", "YES"]))
    values = _external(numpy_helper.from_array(np.ones(1, np.float32), "sparse"))
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "sparse_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    with pytest.raises(UnsafeModelError, match="external data"):
        check_model_bytes(model.SerializeToString())


def test_subgraphs_functions_and_foreign_domains_are_refused() -> None:
    with pytest.raises(UnsafeModelError, match="'com.microsoft.FusedGemm'"):
        check_model_bytes(hostile_models.disallowed_op_model("FusedGemm", "com.microsoft"))
    model = onnx.load_from_string(brightness_model(["NO", "YES"]))
    model.functions.append(helper.make_function("local", "f", ["x"], ["y"], [], [helper.make_opsetid("", 17)]))
    with pytest.raises(UnsafeModelError, match="local functions"):
        check_model_bytes(model.SerializeToString())


def test_tensors_over_the_limits_are_refused_by_their_declared_size() -> None:
    data = brightness_model(["NO", "YES"])  # weights: 3 x 2 float32 = 24 bytes
    with pytest.raises(UnsafeModelError, match="over the 16 limit"):
        check_model_bytes(data, limits=ModelLimits(max_tensor_bytes=16))
    with pytest.raises(UnsafeModelError, match="hold 24 bytes"):
        check_model_bytes(data, limits=ModelLimits(max_total_tensor_bytes=20))


def test_not_onnx_is_a_package_error() -> None:
    with pytest.raises(PackageError) as refused:
        check_model_bytes(b"not onnx")
    assert "not an ONNX model" in refused.value.public_message
    with pytest.raises(PackageError, match="empty"):
        check_model_bytes(b"")


def test_the_trial_run_refuses_a_memory_bomb_and_a_model_that_cannot_run() -> None:
    with pytest.raises(UnsafeModelError) as refused:
        trial_run(hostile_models.memory_bomb_model(1_200_000_000), height=32, width=32)
    assert "1024 MiB memory limit" in refused.value.public_message
    # The cap scales: the same bomb fits when the base allows it (proves the cap refuses, not the graph).
    trial_run(hostile_models.memory_bomb_model(200_000_000), height=32, width=32)
    with pytest.raises(UnsafeModelError) as refused:
        trial_run(
            hostile_models.memory_bomb_model(200_000_000),
            height=32,
            width=32,
            limits=ModelLimits(trial_base_bytes=300 * 1024 * 1024),
        )
    assert "memory limit" in refused.value.public_message
    broken = onnx.load_from_string(brightness_model(["NO", "YES"]))
    del broken.graph.initializer[:]  # MatMul without its weights: ONNX Runtime cannot load it
    with pytest.raises(PackageError) as refused:
        trial_run(broken.SerializeToString(), height=32, width=32)
    assert not isinstance(refused.value, UnsafeModelError)
    assert "not a loadable ONNX model" in refused.value.public_message
