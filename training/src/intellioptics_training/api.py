"""The public library API in one import: what the retraining worker and tests call."""

from __future__ import annotations

from intellioptics_training.data import Dataset, Sample, prepare, read_image_folder, stratified_split
from intellioptics_training.errors import DatasetError, TrainingCancelled
from intellioptics_training.evaluate import EvaluationReport, compute_report, load_detector, score_images
from intellioptics_training.trainer import Progress, TrainedModels, export_package, train_detector

__all__ = [
    "Dataset",
    "DatasetError",
    "EvaluationReport",
    "Progress",
    "Sample",
    "TrainedModels",
    "TrainingCancelled",
    "compute_report",
    "export_package",
    "load_detector",
    "prepare",
    "read_image_folder",
    "score_images",
    "stratified_split",
    "train_detector",
]
