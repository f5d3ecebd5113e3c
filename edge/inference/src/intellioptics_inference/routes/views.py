"""Conversions from internal frozen dataclasses to wire models, shared by the routers."""

from __future__ import annotations

from intellioptics_inference.cache import CacheEntryView
from intellioptics_inference.schemas import LoadedDetector


def loaded_view(entry: CacheEntryView) -> LoadedDetector:
    return LoadedDetector(
        detector_id=entry.detector_id,
        primary_model_version=entry.primary_version,
        primary_model_id=entry.primary_model_id,
        oodd_model_version=entry.oodd_version,
        oodd_model_id=entry.oodd_model_id,
        fused=entry.fused,
        size_bytes=entry.size_bytes,
        load_seconds=round(entry.load_s, 4),
    )
