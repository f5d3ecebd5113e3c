"""Fuse a detector's primary and OODD graphs so the shared backbone runs once.

Both ``model.buf`` files are full graphs (image → output) built from the same backbone
export: backbone nodes and initializers carry identical names in both, head parts are
prefixed (``primary/``, ``oodd/``). The fused model is the primary graph plus the OODD
nodes and initializers it lacks, with both outputs. Needs the ``onnx`` package (no
torch), imported lazily so that parts which never fuse do not pay for it.
"""

from __future__ import annotations

from intellioptics_common.errors import PackageError


def fuse_primary_oodd(primary_bytes: bytes, oodd_bytes: bytes) -> bytes:
    """Return one ONNX model with the primary outputs followed by the OODD outputs.

    Refuses graphs whose shared names disagree (different backbones), since silently
    running the primary's backbone for the OODD head would give wrong scores.
    """
    import onnx
    from onnx import numpy_helper

    primary = onnx.load_from_string(primary_bytes)
    oodd = onnx.load_from_string(oodd_bytes)
    p_graph, o_graph = primary.graph, oodd.graph
    if [i.name for i in p_graph.input] != [i.name for i in o_graph.input]:
        raise PackageError("primary and OODD models take different inputs; they cannot be fused")

    p_inits = {init.name: init for init in p_graph.initializer}
    produced = {out for node in p_graph.node for out in node.output} | {i.name for i in p_graph.input}
    fused = onnx.ModelProto()
    fused.CopyFrom(primary)
    graph = fused.graph
    for init in o_graph.initializer:
        mine = p_inits.get(init.name)
        if mine is None:
            graph.initializer.append(init)
        elif mine.SerializeToString() != init.SerializeToString() and not _same_values(mine, init, numpy_helper):
            raise PackageError(f"primary and OODD disagree on shared weight {init.name!r}: different backbones")
    p_nodes = {tuple(node.output): node for node in p_graph.node}
    for node in o_graph.node:
        key = tuple(node.output)
        if key in p_nodes:
            if p_nodes[key].SerializeToString() != node.SerializeToString():
                raise PackageError(f"primary and OODD disagree on shared node producing {key}: different backbones")
            continue
        if any(out in produced for out in node.output):
            raise PackageError(f"OODD node {node.name!r} would overwrite a primary tensor")
        graph.node.append(node)
    existing_outputs = {o.name for o in graph.output}
    for output in o_graph.output:
        if output.name in existing_outputs:
            raise PackageError(f"primary and OODD both produce an output named {output.name!r}")
        graph.output.append(output)
    onnx.checker.check_model(fused)
    return fused.SerializeToString()


def _same_values(a, b, numpy_helper) -> bool:
    import numpy as np

    return bool(np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b)))
