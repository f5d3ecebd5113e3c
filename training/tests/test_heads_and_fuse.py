from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from intellioptics_common.errors import PackageError
from intellioptics_common.onnx_fuse import fuse_primary_oodd
from intellioptics_training.backbone import load_pretrained
from intellioptics_training.features import BackboneRunner
from intellioptics_training.heads import (
    IN_DOMAIN,
    OODD_INPUTS,
    OODD_PREFIX,
    PRIMARY_INPUTS,
    PRIMARY_PREFIX,
    PROBABILITIES,
    OoddHead,
    PrimaryHead,
    merge_with_backbone,
)
from intellioptics_training.synthetic import generate


def _image_tensor(seed: int) -> np.ndarray:
    rgb = next(iter(generate("binary", 1, seed))).rgb
    return ((rgb.astype(np.float32) - 127) / 128).transpose(2, 0, 1)[None].copy()


def _random_heads(seed: int = 0) -> tuple[PrimaryHead, OoddHead]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    stats = {
        name: (rng.normal(size=c), rng.uniform(0.5, 2, size=c)) for name, c in (("feat_s8", 40), ("feat_s16", 112))
    }
    primary = PrimaryHead(2, stats).eval()
    primary.temperature.fill_(1.7)
    bank = rng.normal(size=(20, 112))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    return primary, OoddHead(stats["feat_s16"], bank, center=0.3, scale=0.05).eval()


def test_exported_heads_match_torch(runner: BackboneRunner) -> None:
    primary, oodd = _random_heads()
    x = _image_tensor(3)
    with torch.no_grad():
        s8, s16, _, _ = load_pretrained().features(torch.from_numpy(x))
        want_p = primary(s8, s16).numpy()
        want_d = oodd(s16).numpy()
    p_model = merge_with_backbone(runner.model_bytes, primary, PRIMARY_INPUTS, PROBABILITIES, PRIMARY_PREFIX)
    d_model = merge_with_backbone(runner.model_bytes, oodd, OODD_INPUTS, IN_DOMAIN, OODD_PREFIX)
    got_p = ort.InferenceSession(p_model, providers=["CPUExecutionProvider"]).run([PROBABILITIES], {"image": x})[0]
    got_d = ort.InferenceSession(d_model, providers=["CPUExecutionProvider"]).run([IN_DOMAIN], {"image": x})[0]
    assert got_p.shape == (1, 2) and got_d.shape == (1, 1)
    np.testing.assert_allclose(got_p, want_p, atol=2e-3)
    np.testing.assert_allclose(got_d, want_d, atol=2e-3)


def test_fused_model_equals_separate_runs(trained) -> None:
    fused = fuse_primary_oodd(trained.primary_onnx, trained.oodd_onnx)
    sessions = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"])
        for m in (trained.primary_onnx, trained.oodd_onnx, fused)
    ]
    names = [o.name for o in sessions[2].get_outputs()]
    assert names == [PROBABILITIES, IN_DOMAIN]
    # The backbone appears once: the fused graph has barely more nodes than the primary.
    import onnx

    n_primary = len(onnx.load_from_string(trained.primary_onnx).graph.node)
    n_oodd = len(onnx.load_from_string(trained.oodd_onnx).graph.node)
    assert len(onnx.load_from_string(fused).graph.node) < n_primary + n_oodd - 100
    for seed in (1, 2):
        x = _image_tensor(seed)
        probs = sessions[0].run([PROBABILITIES], {"image": x})[0]
        dom = sessions[1].run([IN_DOMAIN], {"image": x})[0]
        f_probs, f_dom = sessions[2].run(names, {"image": x})
        np.testing.assert_allclose(f_probs, probs, atol=1e-6)
        np.testing.assert_allclose(f_dom, dom, atol=1e-6)


def test_fuse_refuses_different_backbones(trained) -> None:
    import onnx

    other = onnx.load_from_string(trained.oodd_onnx)
    first = next(i for i in other.graph.initializer if not i.name.startswith(OODD_PREFIX) and i.dims)
    values = onnx.numpy_helper.to_array(first).copy()
    values.flat[0] += 1.0
    first.CopyFrom(onnx.numpy_helper.from_array(values, first.name))
    with pytest.raises(PackageError):
        fuse_primary_oodd(trained.primary_onnx, other.SerializeToString())
