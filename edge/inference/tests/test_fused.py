"""The one-backbone-pass path: primary and OODD fused into one session.

The production fuser comes from the common library; here a fuser built on
``onnx.compose`` (the OODD head cut at the backbone output and attached to the primary
graph) exercises the same ``FusedDetectorModel`` code with real graphs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnx.compose
import onnx.utils
import pytest

from intellioptics_common.imaging import DEFAULT_LIMITS
from intellioptics_common.runtime import RuntimeOptions
from intellioptics_inference.loader import load_detector


def compose_fuser(primary_bytes: bytes, oodd_bytes: bytes, backbone_output: str = "feat") -> bytes:
    primary = onnx.load_from_string(primary_bytes)
    oodd = onnx.shape_inference.infer_shapes(onnx.load_from_string(oodd_bytes))
    head = onnx.utils.Extractor(oodd).extract_model([backbone_output], [o.name for o in oodd.graph.output])
    names = [o.name for o in head.graph.output]
    head = onnx.compose.add_prefix(head, "oodd_")
    for node in head.graph.node:  # keep the package's output names (the loader looks them up)
        node.output[:] = [n.removeprefix("oodd_") if n.removeprefix("oodd_") in names else n for n in node.output]
    for output in head.graph.output:
        output.name = output.name.removeprefix("oodd_")
    primary.graph.output.extend(
        [onnx.helper.make_empty_tensor_value_info(backbone_output)]  # expose the cut point
    )
    fused = onnx.compose.merge_models(
        primary,
        head,
        io_map=[(backbone_output, f"oodd_{backbone_output}")],
        outputs=[o.name for o in primary.graph.output if o.name != backbone_output]
        + [o.name for o in head.graph.output],
    )
    return fused.SerializeToString()


def test_fused_model_runs_one_session_with_the_same_answers(models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_fuse", yes_bias=0.3)
    runtime = RuntimeOptions()
    fused = load_detector(models_dir, "det_fuse", runtime, compose_fuser).model
    separate = load_detector(models_dir, "det_fuse", runtime, None).model
    assert fused.fused and not separate.fused
    assert fused.size_bytes < separate.size_bytes  # one backbone held, not two
    for seed in range(3):
        image = kit.jpeg(seed=seed)
        a, b = fused.predict(image, DEFAULT_LIMITS), separate.predict(image, DEFAULT_LIMITS)
        assert a.prediction.label == b.prediction.label
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-6)
        assert a.in_domain_score == pytest.approx(b.in_domain_score, abs=1e-6)


def test_failed_fusion_falls_back_to_two_sessions(models_dir: Path, kit, caplog) -> None:
    kit.write_detector(models_dir, "det_nofuse")
    caplog.set_level(logging.WARNING, logger="intellioptics_inference")
    broken = partial(compose_fuser, backbone_output="no_such_tensor")
    model = load_detector(models_dir, "det_nofuse", RuntimeOptions(), broken).model
    assert not model.fused and model.oodd is not None
    assert "could not fuse det_nofuse" in caplog.text
    assert model.predict(kit.jpeg(), DEFAULT_LIMITS).in_domain_score is not None


def test_packages_on_different_backbones_are_not_fused(models_dir: Path, kit) -> None:
    calls: list[str] = []

    def counting_fuser(primary: bytes, oodd: bytes) -> bytes:
        calls.append("fused")
        return compose_fuser(primary, oodd)

    kit.write_detector(models_dir, "det_same")
    assert load_detector(models_dir, "det_same", RuntimeOptions(), counting_fuser).model.fused
    # Same graphs, but the OODD package names another backbone: fusing would be wrong.
    kit.write_package(models_dir, "det_mixed", "primary")
    other = replace(kit.backbone, id="other-backbone")
    kit.write_package(models_dir, "det_mixed", "oodd", backbone=other)
    assert not load_detector(models_dir, "det_mixed", RuntimeOptions(), counting_fuser).model.fused
    assert calls == ["fused"]


def test_the_common_library_fuser_is_used_when_installed(models_dir: Path, kit) -> None:
    """Once ``intellioptics_common.onnx_fuse`` exists, the service must fuse with it."""
    pytest.importorskip("intellioptics_common.onnx_fuse")
    from intellioptics_common.runtime import default_fuser

    fuser = default_fuser()
    assert fuser is not None
    kit.write_detector(models_dir, "det_common_fuse", yes_bias=0.3)
    fused = load_detector(models_dir, "det_common_fuse", RuntimeOptions(), fuser).model
    separate = load_detector(models_dir, "det_common_fuse", RuntimeOptions(), None).model
    assert fused.fused
    a, b = fused.predict(kit.jpeg(), DEFAULT_LIMITS), separate.predict(kit.jpeg(), DEFAULT_LIMITS)
    np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-6)
    assert a.in_domain_score == pytest.approx(b.in_domain_score, abs=1e-6)
