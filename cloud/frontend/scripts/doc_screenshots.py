"""Copy the browser tests' screenshots that docs/web-ui.md shows into docs/img/, small.

    .venv/bin/pytest cloud/frontend/tests/test_web_ui.py cloud/frontend/tests/test_review_failures.py
    .venv/bin/python cloud/frontend/scripts/doc_screenshots.py

Each PNG is reduced to a 64-colour palette (the UI is flat colours; the photos lose a
little), which keeps a 1280x900 page near 100 kB instead of a megabyte.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

FRONTEND = Path(__file__).resolve().parents[1]
SHOTS = FRONTEND / "test-output"
DOCS_IMG = FRONTEND.parents[1] / "docs" / "img"

# docs/img name <- screenshot under test-output/
PICKS = {
    "review-1280.png": "screenshots/02-review.png",
    "review-390.png": "screenshots/phone-review.png",
    "models-compare-1280.png": "screenshots/12-models-compare.png",
    "models-390.png": "screenshots/phone-models.png",
    "edge-1280.png": "screenshots/14-edge.png",
    "review-signin-again-1280.png": "review-failures/screenshots/20-review-signin-again.png",
    "review-save-failed-1280.png": "review-failures/screenshots/21-review-save-failed.png",
}


def main() -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    for name, source in PICKS.items():
        image = Image.open(SHOTS / source).convert("RGB")
        small = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(DOCS_IMG / name, optimize=True)
        print(f"{DOCS_IMG / name}: {image.width}x{image.height}, {(DOCS_IMG / name).stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
