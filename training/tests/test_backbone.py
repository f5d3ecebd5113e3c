from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from intellioptics_training.backbone import FEATURE_CHANNELS, FEATURE_OUTPUTS, export_backbone, load_pretrained


def _imagenet_top5(net: torch.nn.Module, rgb: np.ndarray, mean: float, std: float) -> list[int]:
    small = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)
    x = torch.from_numpy(((small - mean) / std).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        return net(x)[0].topk(5).indices.tolist()


def test_weights_load_and_classify_bundled_photos() -> None:
    """Wrongly placed weights give garbage classes; right ones recognise a cat and a coffee cup."""
    skimage_data = pytest.importorskip("skimage.data")
    net = load_pretrained()
    cat = _imagenet_top5(net, skimage_data.chelsea(), 127.0, 128.0)
    coffee = _imagenet_top5(net, skimage_data.coffee(), 127.0, 128.0)
    assert cat[0] in range(281, 286)  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert coffee[0] in (967, 968, 504)  # espresso, cup, coffee mug


def test_input_normalisation_matches_first_batchnorm_statistics() -> None:
    """(x - 127) / 128 is what the stem's BatchNorm statistics were collected on."""
    skimage_data = pytest.importorskip("skimage.data")
    net = load_pretrained()
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut(), skimage_data.rocket()]
    errors = {}
    for name, (mean, std) in {"lite": (127.0, 128.0), "torchvision": (None, None)}.items():
        batch = []
        for photo in photos:
            x = np.asarray(Image.fromarray(photo).resize((224, 224)), dtype=np.float32)
            if mean is None:
                x = (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
            else:
                x = (x - mean) / std
            batch.append(x.transpose(2, 0, 1).astype(np.float32))
        with torch.no_grad():
            y = net._conv_stem(net.stem_pad(torch.from_numpy(np.stack(batch))))
        bn = net._bn0
        ok = bn.running_var > 1e-6
        ratio = (y.var(dim=(0, 2, 3)) / bn.running_var)[ok]
        errors[name] = float(ratio.log().abs().median())
    assert errors["lite"] < errors["torchvision"]


def test_export_matches_torch_and_is_idempotent(tmp_path: Path) -> None:
    info = export_backbone(tmp_path)
    onnx_file = tmp_path / "backbone.onnx"
    assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == info.sha256
    assert json.loads((tmp_path / "backbone.json").read_text())["outputs"] == list(FEATURE_OUTPUTS)
    mtime = onnx_file.stat().st_mtime_ns
    assert export_backbone(tmp_path).sha256 == info.sha256
    assert onnx_file.stat().st_mtime_ns == mtime  # not rewritten

    x = np.random.default_rng(0).normal(size=(2, 3, 320, 320)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(list(FEATURE_OUTPUTS), {"image": x})
    with torch.no_grad():
        want = load_pretrained().features(torch.from_numpy(x))
    for g, w, channels in zip(got, want, FEATURE_CHANNELS, strict=True):
        assert g.shape[1] == channels
        np.testing.assert_allclose(g, w.numpy(), atol=2e-3, rtol=1e-3)
