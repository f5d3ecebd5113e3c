"""The stronger trainer: fine-tune the whole backbone with the multiple-instance head.

Uses a GPU when torch sees one, the CPU otherwise. The primary graph then carries its
own backbone weights, so it records no shared :class:`BackboneRef` and cannot be fused
with the OODD graph (which keeps the shared ImageNet backbone); the inference service
runs the two separately for such a detector.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from intellioptics_common.model_package import InputSpec
from intellioptics_common.preprocessing import to_input_tensor
from intellioptics_training.backbone import load_pretrained
from intellioptics_training.heads import PROBABILITIES, PrimaryHead


class FineTuned(nn.Module):
    def __init__(self, head: PrimaryHead) -> None:
        super().__init__()
        self.net = load_pretrained()
        self.head = head

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        s8, s16, _, _ = self.net.features(image)
        return self.head.logits(s8, s16)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s8, s16, _, _ = self.net.features(image)
        return self.head(s8, s16)


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns per batch: surfaces have no up or down."""
    if torch.rand(1, generator=generator).item() < 0.5:
        batch = batch.flip(3)
    if torch.rand(1, generator=generator).item() < 0.5:
        batch = batch.flip(2)
    turns = int(torch.randint(0, 4, (1,), generator=generator).item())
    return torch.rot90(batch, turns, dims=(2, 3)) if batch.shape[2] == batch.shape[3] else batch


def finetune_primary(
    rgb: list[np.ndarray],
    labels: np.ndarray,
    head: PrimaryHead,
    spec: InputSpec,
    epochs: int,
    report: Callable[..., None],
    seed: int = 0,
) -> FineTuned:
    """Train backbone + head end to end; ``head`` arrives initialised (standardisation set)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = FineTuned(head).to(device)
    images = torch.from_numpy(np.concatenate([to_input_tensor(x, spec) for x in rgb]))
    targets = torch.from_numpy(labels)
    counts = np.bincount(labels, minlength=head.num_classes).astype(np.float32)
    weights = torch.from_numpy(counts.sum() / (head.num_classes * np.maximum(counts, 1))).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(
        [{"params": model.net.parameters(), "lr": 3e-4}, {"params": model.head.parameters(), "lr": 2e-3}],
        weight_decay=1e-4,
    )
    generator = torch.Generator().manual_seed(seed)
    batch = 16
    for epoch in range(epochs):
        model.train()
        model.net.eval()  # frozen BatchNorm statistics: batches of 16 are too small to re-estimate them
        order = torch.randperm(len(targets), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            x = _augment(images[idx], generator).to(device)
            loss = loss_fn(model.logits(x), targets[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        report("primary", epoch + 1, epochs, loss=total / len(order))
    return model.cpu().eval()


def export_finetuned(model: FineTuned, spec: InputSpec) -> bytes:
    buffer = io.BytesIO()
    dummy = torch.zeros(1, 3, spec.height, spec.width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buffer,  # type: ignore[arg-type]  # export writes to a file object; the stub names paths only
            input_names=[spec.tensor_name],
            output_names=[PROBABILITIES],
            dynamic_axes={spec.tensor_name: {0: "batch"}, PROBABILITIES: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def logits_of(model: FineTuned, rgb: list[np.ndarray], spec: InputSpec) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.logits(torch.from_numpy(to_input_tensor(x, spec))) for x in rgb])
