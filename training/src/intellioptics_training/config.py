"""Typed settings of the training library (``INTELLIOPTICS_`` environment variables)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """``threads`` bounds onnxruntime and torch intra-op threads (0: library default)."""

    model_config = SettingsConfigDict(env_prefix="INTELLIOPTICS_", extra="ignore")

    data_dir: Path = Path("data")
    threads: int = 0
    backbone_dir: Path | None = None


@lru_cache
def get_settings() -> TrainingSettings:
    return TrainingSettings()


def data_dir() -> Path:
    return get_settings().data_dir


def backbone_dir() -> Path:
    settings = get_settings()
    return settings.backbone_dir or settings.data_dir / "backbones" / "efficientnet_lite0"
