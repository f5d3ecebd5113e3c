"""Cut a detector's graph at its backbone's outputs: the backbone part and the head part.

A package's ``model.buf`` is one graph, image → answer, built on a shared backbone export
whose output tensors ``pipeline_config.backbone.output`` names (``feat_head``, or
``feat_s8,feat_s16`` for multi-scale heads). Cut there, the backbone part is the same for
every detector built on that export, so several detectors asked about one image can run
it once and then each run its own (small) head. Needs the ``onnx`` package, imported
lazily like the fuser's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from intellioptics_common.errors import PackageError


@dataclass(frozen=True)
class SplitGraph:
    backbone: bytes  # image → the cut tensors
    head: bytes  # the cut tensors → the graph's outputs
    key: str  # sha256 of the backbone part's computation: equal keys compute the same tensors
    image_input: str
    cut: tuple[str, ...]


def split_at_backbone(model_bytes: bytes, cut: Sequence[str]) -> SplitGraph:
    """Refuses (PackageError) a graph whose head reads anything but the cut tensors (the
    image itself, say): running such a head on shared features would answer wrongly."""
    import onnx
    import onnx.utils

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise PackageError(f"a graph with inputs {inputs} has no single image input to share")
    produced = {out for node in graph.node for out in node.output}
    missing = [name for name in cut if name not in produced]
    if not cut or missing:
        raise PackageError(f"the graph has no backbone output {missing or list(cut)}")
    outputs = [o.name for o in graph.output]
    # The extractor needs the cut tensors' types: shape inference gives them.
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model))
    backbone = extractor.extract_model(inputs, list(cut))
    head = extractor.extract_model(list(cut), outputs)
    reads = {name for node in head.graph.node for name in node.input if name}
    defined = (
        {i.name for i in head.graph.input}
        | {init.name for init in head.graph.initializer}
        | {out for node in head.graph.node for out in node.output}
    )
    if inputs[0] in reads or not reads <= defined:
        raise PackageError("the head reads tensors besides the backbone's outputs; it cannot run on shared features")
    onnx.checker.check_model(head)
    return SplitGraph(
        backbone=backbone.SerializeToString(),
        head=head.SerializeToString(),
        key=_computation_key(backbone),
        image_input=inputs[0],
        cut=tuple(cut),
    )


def _computation_key(backbone) -> str:  # type: ignore[no-untyped-def]
    """What the backbone part computes, without the names and metadata a package may vary."""
    import onnx

    graph = onnx.GraphProto()
    graph.CopyFrom(backbone.graph)
    graph.name = ""
    graph.doc_string = ""
    digest = hashlib.sha256(graph.SerializeToString(deterministic=True))
    for opset in sorted((o.domain, o.version) for o in backbone.opset_import):
        digest.update(repr(opset).encode())
    return digest.hexdigest()
