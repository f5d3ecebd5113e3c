"""Heads on the frozen backbone maps, and their export into one ONNX graph each.

Primary head (multiple-instance): a 1x1-conv classifier scores every position of the
stride-8 and stride-16 maps, fed with the feature *and its difference from the image's
own mean feature* (a defect is what the rest of the surface is not, whatever the
surface); the image score per class is the max over positions. (A linear term on the
globally pooled head map was tried and dropped: it overfits the surface look and cost
0.07 balanced accuracy on the generated set.) A thin scratch changes a few positions strongly, which
max pooling keeps and a global average dilutes.

OODD head: cosine distance of the image's pooled stride-16 feature (standardised by the
training images' statistics, then L2-normalised) to the nearest training embedding,
mapped to an in-domain probability by a logistic anchored at the leave-one-out
distances of the training images. It reads the same stride-16 map as the primary, so
the fused primary + OODD graph never runs the backbone's last stages: on the generated
sets it separated unrelated photos as well as the 1280-d head embedding did (every OOD
image below 0.9, 98-100 % of in-domain images above), at no cost beyond the primary.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import compose
from torch import nn

from intellioptics_common.model_package import PipelineConfig, PredictorMetadata

PRIMARY_PREFIX = "primary/"
OODD_PREFIX = "oodd/"
PRIMARY_INPUTS = ("feat_s8", "feat_s16")
OODD_INPUTS = ("feat_s16",)
PROBABILITIES = "probabilities"
IN_DOMAIN = "in_domain"
_CHANNELS = {"feat_s8": 40, "feat_s16": 112, "feat_head": 1280}


class Standardize(nn.Module):
    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("scale", 1.0 / torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-4).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale


class PrimaryHead(nn.Module):
    """feat_s8, feat_s16 → class probabilities (softmax of logits / temperature)."""

    temperature: torch.Tensor

    def __init__(self, num_classes: int, stats: dict[str, tuple[np.ndarray, np.ndarray]], hidden: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norms = nn.ModuleDict()
        self.scorers = nn.ModuleDict()
        for name in ("feat_s8", "feat_s16"):
            self.norms[name] = Standardize(*stats[name])
            self.scorers[name] = nn.Sequential(
                nn.Conv2d(2 * _CHANNELS[name], hidden, 1), nn.ReLU(), nn.Dropout(0.2), nn.Conv2d(hidden, num_classes, 1)
            )
        self.register_buffer("temperature", torch.ones(1))

    def prepare(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed (not learned) part: standardise and add the self-contrast."""
        out = []
        for name, x in (("feat_s8", feat_s8), ("feat_s16", feat_s16)):
            x = self.norms[name](x)
            out.append(torch.cat([x, x - x.mean(dim=(2, 3), keepdim=True)], dim=1))
        return out[0], out[1]

    def logits_prepared(self, s8: torch.Tensor, s16: torch.Tensor) -> torch.Tensor:
        return self.scorers["feat_s8"](s8).amax(dim=(2, 3)) + self.scorers["feat_s16"](s16).amax(dim=(2, 3))

    def logits(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        return self.logits_prepared(*self.prepare(feat_s8, feat_s16))

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(feat_s8, feat_s16) / self.temperature, dim=1)


class EnsembleHead(nn.Module):
    """The mean of its members' logits, softmax at one temperature: the cross-fitted fold
    heads and the head trained on every image serve together. One head on all images alone
    was surer on new images than the fold heads its temperature was measured on (it
    answered images the calibration had ruled out); the mean stays close to the fold
    heads' scale, and ensembles help where labels are few. Members share the input maps, so the cost is k + 1 small
    1x1-conv heads on one backbone pass."""

    temperature: torch.Tensor

    def __init__(self, members: list[PrimaryHead]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self._heads = members  # the same modules, typed
        self.num_classes = members[0].num_classes
        self.register_buffer("temperature", torch.ones(1))

    def logits(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.logits(feat_s8, feat_s16) for m in self._heads]).mean(dim=0)

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(feat_s8, feat_s16) / self.temperature, dim=1)


class OoddHead(nn.Module):
    """feat_s16 → in-domain probability, shape [N, 1]."""

    bank_t: torch.Tensor

    def __init__(self, stats: tuple[np.ndarray, np.ndarray], bank: np.ndarray, center: float, scale: float) -> None:
        super().__init__()
        self.norm = Standardize(*stats)
        self.register_buffer("bank_t", torch.as_tensor(bank.T.copy(), dtype=torch.float32))
        self.center = float(center)
        self.scale = float(scale)

    def embed(self, feat_s16: torch.Tensor) -> torch.Tensor:
        pooled = self.norm(feat_s16.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return pooled / (pooled.norm(dim=1, keepdim=True) + 1e-6)

    def forward(self, feat_s16: torch.Tensor) -> torch.Tensor:
        distance = 1.0 - (self.embed(feat_s16) @ self.bank_t).amax(dim=1, keepdim=True)
        return torch.sigmoid((self.center - distance) / self.scale)


_DUMMY_SIZE = {"feat_s8": 8, "feat_s16": 4, "feat_s32": 2, "feat_head": 2}  # the strides' ratios


def _export_head(
    module: nn.Module, input_names: tuple[str, ...], outputs: tuple[str, ...], spatial: tuple[str, ...] = ()
) -> onnx.ModelProto:
    """Export a head on backbone maps; outputs named in ``spatial`` are N x C x H x W maps
    whose height and width follow the input's."""
    module = module.eval()
    dummies = tuple(torch.zeros(1, _CHANNELS[name], _DUMMY_SIZE[name], _DUMMY_SIZE[name]) for name in input_names)
    dynamic: dict[str, dict[int, str]] = {name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in input_names}
    for name in outputs:
        dynamic[name] = {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} if name in spatial else {0: "batch"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            dummies,
            buffer,  # type: ignore[arg-type]  # export writes to a file object; the stub names paths only
            input_names=list(input_names),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def merge_with_backbone(
    backbone_bytes: bytes, head: nn.Module, input_names: tuple[str, ...], output: str, prefix: str
) -> bytes:
    """One graph: image → output. Backbone names are kept as exported (identical in the
    primary and OODD graphs); head names get ``prefix`` so the two can be fused."""
    return merge_outputs_with_backbone(backbone_bytes, head, (output,), prefix, input_names=input_names)


def merge_outputs_with_backbone(
    backbone_bytes: bytes,
    head: nn.Module,
    outputs: tuple[str, ...],
    prefix: str,
    *,
    spatial: tuple[str, ...] = (),
    input_names: tuple[str, ...] = PRIMARY_INPUTS,
) -> bytes:
    """One graph: image → the head's outputs under their plain names (``probabilities``,
    ``in_domain``, ``anomaly_map``...), for readers; the head's own names get ``prefix``."""
    backbone = onnx.load_from_string(backbone_bytes)
    head_model = _export_head(head, input_names, outputs, spatial)
    head_model.ir_version = backbone.ir_version
    merged = compose.merge_models(
        backbone,
        head_model,
        io_map=[(name, name) for name in input_names],
        outputs=[prefix + name for name in outputs],
        prefix2=prefix,
    )
    old = {o.name: o for o in merged.graph.output}
    del merged.graph.output[:]
    for name in outputs:
        merged.graph.node.append(
            onnx.helper.make_node("Identity", [prefix + name], [name], name=prefix + name + "_out")
        )
        value = onnx.helper.make_tensor_value_info(name, old[prefix + name].type.tensor_type.elem_type, None)
        value.type.CopyFrom(old[prefix + name].type)
        merged.graph.output.append(value)
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def write_primary_and_oodd(
    models_dir: Path,
    primary: tuple[bytes, PipelineConfig, PredictorMetadata],
    oodd_bytes: bytes,
    model_ids: tuple[str, str] | None = None,
) -> dict[str, Path]:
    """Write a primary and its OODD as new package versions of one detector. The OODD's
    pipeline and metadata are the primary's with the OODD output and no head-specific
    section or metrics (the OODD head is the same for every model kind)."""
    from dataclasses import replace

    from intellioptics_common.ids import new_id
    from intellioptics_common.model_package import write_version

    model_bytes, pipeline, metadata = primary
    oodd = (
        oodd_bytes,
        replace(pipeline, kind="oodd", output=IN_DOMAIN, anomaly=None, detection=None),
        replace(metadata, kind="oodd", metrics={}),
    )
    ids = model_ids or (new_id("mdl"), new_id("mdl"))
    paths: dict[str, Path] = {}
    for (data, config, meta), model_id in zip((primary, oodd), ids, strict=True):
        paths[config.kind] = write_version(
            Path(models_dir),
            metadata.detector_id,
            config.kind,
            model_bytes=data,
            pipeline=config,
            metadata=meta,
            model_id=model_id,
        )
    return paths
