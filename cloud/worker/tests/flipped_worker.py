"""A real worker process whose training library is fed every label reversed (YES<->NO):
it produces a real model that is worse than the active one. Run as a script."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from intellioptics_worker.__main__ import main
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.library import LibraryTrainer
from intellioptics_worker.settings import WorkerSettings
from intellioptics_worker.training import TrainedVersion

FLIPPED = {"YES": "NO", "NO": "YES"}


class FlippedLabels:
    def __init__(self, settings: WorkerSettings) -> None:
        self._inner = LibraryTrainer(settings)

    def train(self, images: Sequence[LabeledImage], **kwargs: Any) -> TrainedVersion:
        flipped = [LabeledImage(i.image_query_id, FLIPPED[i.label], i.image) for i in images]
        return self._inner.train(flipped, **kwargs)


if __name__ == "__main__":
    sys.exit(main(trainer_factory=FlippedLabels))
