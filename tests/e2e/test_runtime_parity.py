"""One package, four callers, the same numbers.

The inference service (what the edge answers), the cloud's own answers, the worker's
scoring (what promotion decides on) and the training library's evaluator each run a
real trained package (primary + OODD on the shared backbone) through their own code
path, all of which now end in ``intellioptics_common.runtime``. Their answers on the
same images must agree: label, OODD-adjusted confidence, raw confidence and in-domain
score. Before the runtime existed the OODD score was read three ways (exactly one value,
the last value, the first value unclipped).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intellioptics_cloud.blobs import FilesystemBlobStore
from intellioptics_cloud.inference import ModelRef, ModelRunner
from intellioptics_common.imaging import DEFAULT_LIMITS, decode_image
from intellioptics_common.model_package import read_latest
from intellioptics_common.runtime import RuntimeOptions, default_fuser
from intellioptics_inference.loader import load_detector as load_served
from intellioptics_training.data import Sample
from intellioptics_training.evaluate import load_detector as load_evaluated
from intellioptics_training.evaluate import score_images
from intellioptics_training.features import BackboneRunner
from intellioptics_training.synthetic import generate
from intellioptics_training.trainer import export_package, train_detector
from intellioptics_worker.scoring import ModelFiles, Scorer

pytestmark = pytest.mark.slow

DETECTOR = "det_parity"
TOLERANCE = 1e-5  # thread counts differ between callers: float sums may differ in the last bits


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize((640, 480)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("parity") / "models"
    samples = [
        Sample(_png(g.rgb), g.label, f"img_{i}") for i, g in enumerate(generate("binary", 20, seed=3, strength=6))
    ]
    trained = train_detector(samples, "binary", threshold=0.8, runner=BackboneRunner(threads=2))
    export_package(models, DETECTOR, trained)
    return models


def test_every_caller_answers_the_same(package: Path, tmp_path: Path) -> None:
    images = [_png(g.rgb) for g in generate("binary", 4, seed=11, strength=6)]
    images += [_jpeg(g.rgb) for g in generate("binary", 2, seed=12, strength=6)]
    images += [_png(g.rgb) for g in generate("ood", 2, seed=13)]

    primary = read_latest(package, DETECTOR, "primary")
    oodd = read_latest(package, DETECTOR, "oodd")
    assert primary is not None and oodd is not None

    # The edge: the inference service's own loader (fused, as it serves).
    served = load_served(package, DETECTOR, RuntimeOptions(), default_fuser()).model
    assert served.fused, "the package's primary and OODD share the backbone: the edge runs them fused"
    edge = []
    for image in images:
        answer = served.predict(image, DEFAULT_LIMITS)
        p = answer.prediction
        edge.append((p.label, p.confidence, p.raw_primary_confidence, answer.in_domain_score))

    # The cloud's own answers, from its blob store.
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    blobs.put("primary", primary.model_bytes())
    blobs.put("oodd", oodd.model_bytes())
    runner = ModelRunner(blobs, DEFAULT_LIMITS)
    primary_ref = ModelRef("primary", primary.model_sha256, primary.pipeline)
    oodd_ref = ModelRef("oodd", oodd.model_sha256, oodd.pipeline)
    cloud = []
    for image in images:
        p = runner.predict(primary_ref, oodd_ref, image)
        cloud.append((p.label, p.confidence, p.raw_primary_confidence, 1.0 - p.p_out))

    # The worker's scoring, from the version's files as the registry serves them.
    scorer = Scorer(ModelFiles(primary.model_bytes(), primary.pipeline, oodd.model_bytes(), oodd.pipeline))
    worker = []
    for image in images:
        s = scorer.score(image)
        worker.append((s.label, s.confidence, s.raw_confidence, s.in_domain))

    # The training library's evaluator (intellioptics evaluate / predict).
    detector = load_evaluated(package, DETECTOR)
    decoded = [decode_image(image, DEFAULT_LIMITS, draft_size=served.draft_size).rgb for image in images]
    scored = score_images(detector, decoded)
    assert scored.in_domain is not None
    names = primary.pipeline.class_names
    library = [
        (names[int(np.argmax(probs))], float(adjusted), float(np.max(probs)), float(in_domain))
        for probs, adjusted, in_domain in zip(scored.probabilities, scored.adjusted(), scored.in_domain, strict=True)
    ]

    for name, answers in (("cloud", cloud), ("worker", worker), ("training evaluator", library)):
        for index, (theirs, ours) in enumerate(zip(answers, edge, strict=True)):
            assert theirs[0] == ours[0], f"{name}, image {index}: label {theirs[0]} vs the edge's {ours[0]}"
            assert theirs[3] is not None and ours[3] is not None
            np.testing.assert_allclose(
                np.array(theirs[1:], dtype=float),
                np.array(ours[1:], dtype=float),
                atol=TOLERANCE,
                err_msg=f"{name}, image {index}: (confidence, raw, in-domain) differ from the edge's",
            )
    # The set is not trivial: some answers are confident, the OOD images are pulled down.
    confidences = [answer[1] for answer in edge]
    assert max(confidences) > 0.8 and min(confidences) < 0.8, confidences
