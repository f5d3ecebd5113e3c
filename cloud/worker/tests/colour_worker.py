"""A real worker process (``intellioptics_worker.__main__.main``: claim loop, signals,
progress thread, cloud client) whose trainer is the colour trainer, slowed to
``COLOUR_EPOCH_S`` per epoch so a test can act mid-training; ``COLOUR_SHUFFLE=1`` trains
it on shuffled labels (a real, worse model). Run as a script."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("colour_trainer", Path(__file__).with_name("colour_trainer.py"))
assert spec is not None and spec.loader is not None
colour = importlib.util.module_from_spec(spec)
sys.modules["colour_trainer"] = colour
spec.loader.exec_module(colour)

from intellioptics_worker.__main__ import main  # noqa: E402

if __name__ == "__main__":
    epoch_s = float(os.environ.get("COLOUR_EPOCH_S", "0.3"))
    shuffle = os.environ.get("COLOUR_SHUFFLE") == "1"
    sys.exit(main(trainer_factory=lambda settings: colour.ColorTrainer(shuffle, epochs=10, epoch_s=epoch_s)))
