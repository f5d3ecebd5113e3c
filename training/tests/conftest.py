"""Shared fixtures: the backbone export (reused from ``make install`` when present) and
one small trained detector that several tests read."""

from __future__ import annotations

from pathlib import Path

import pytest

from intellioptics_training.backbone import BACKBONE_FILE, export_backbone
from intellioptics_training.config import backbone_dir
from intellioptics_training.data import Sample
from intellioptics_training.features import BackboneRunner
from intellioptics_training.synthetic import generate
from intellioptics_training.trainer import TrainedModels, train_detector


@pytest.fixture(scope="session")
def backbone_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    installed = backbone_dir()
    if (installed / BACKBONE_FILE).is_file():
        return installed
    target = tmp_path_factory.mktemp("backbone")
    export_backbone(target)
    return target


@pytest.fixture(scope="session")
def runner(backbone_path: Path) -> BackboneRunner:
    return BackboneRunner(backbone_path, threads=2)


@pytest.fixture(scope="session")
def trained(runner: BackboneRunner) -> TrainedModels:
    samples = [Sample(g.rgb, g.label) for g in generate("binary", 16, seed=11, strength=3.0)]
    return train_detector(samples, "binary", epochs=8, runner=runner)
