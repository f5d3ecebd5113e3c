"""Settings of the inference service: one typed object read from ``INTELLIOPTICS_*``.

Every variable is documented for operators in ``docs/inference.md``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from intellioptics_common.imaging import ImageLimits
from intellioptics_common.settings import BaseServiceSettings


class InferenceSettings(BaseServiceSettings):
    models_dir: Path = Path("data/edge/models")
    inference_host: str = "127.0.0.1"
    inference_port: int = Field(default=8001, ge=1, le=65535)

    # Cache: a detector's primary and OODD count as one entry.
    inference_cache_size: int = Field(default=5, ge=1)
    inference_max_memory_mb: int = Field(default=2048, ge=1)
    # Shorter than the edge API's read timeout, so it gets our 503 and not its own timeout.
    inference_load_timeout_s: float = Field(default=5.0, gt=0)
    inference_load_workers: int = Field(default=1, ge=1, le=8)
    # Threads that decode images and run models (the event loop never does).
    inference_workers: int = Field(default=4, ge=1, le=64)
    inference_max_image_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    inference_max_image_pixels: int = Field(default=40_000_000, gt=0)
    # Pixels all concurrent decodes may hold at once (one larger image still decodes
    # alone); 0 turns the budget off. See docs/inference.md.
    inference_max_decode_pixels_in_flight: int = Field(default=48_000_000, ge=0)

    # ONNX Runtime; 0 lets ONNX Runtime choose (one thread per physical core).
    ort_intra_op_threads: int = Field(default=1, ge=0, le=256)
    ort_inter_op_threads: int = Field(default=1, ge=0, le=256)
    ort_execution_mode: Literal["sequential", "parallel"] = "sequential"
    # Spinning workers answer a little faster but burn CPU that other requests need.
    ort_allow_spinning: bool = False

    model_poll_interval_s: float = Field(default=2.0, gt=0)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.inference_max_image_bytes,
            max_pixels=self.inference_max_image_pixels,
            max_pixels_in_flight=self.inference_max_decode_pixels_in_flight,
        )


@lru_cache
def get_settings() -> InferenceSettings:
    return InferenceSettings()
