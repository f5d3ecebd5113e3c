"""An anomaly model in the cloud: uploaded like any model version, it answers BINARY
queries with boxes around the defect and serves heat-map / mask / boxes overlays of a
query's image."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from PIL import Image

from intellioptics_training.anomaly import AnomalyOptions, TrainedAnomaly, export_anomaly_package, train_anomaly
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import Sample, prepare_good
from intellioptics_training.features import BackboneRunner
from intellioptics_training.synthetic import encode_png, generate_anomaly

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained() -> TrainedAnomaly:
    good = [g.rgb for g in generate_anomaly("metal", 8, 0, seed=51, strength=4.0)]
    return train_anomaly(
        prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT),
        AnomalyOptions(max_bank_patches=512, folds=4),
        runner=BackboneRunner(threads=2),
    )


def test_uploaded_anomaly_model_answers_and_draws_overlays(admin, trained, tmp_path) -> None:
    paths = export_anomaly_package(tmp_path, "det_upload", trained)
    manifest = {
        "primary_pipeline_config": yaml.safe_load((paths["primary"] / "pipeline_config.yaml").read_text()),
        "oodd_pipeline_config": yaml.safe_load((paths["oodd"] / "pipeline_config.yaml").read_text()),
        "primary_metadata": {"trainer": "anomaly-patchcore"},
        "oodd_metadata": {"trainer": "anomaly-patchcore"},
        "metrics": {},
        "training_set_size": 8,
        "class_counts": {"NO": 8},
        "trainer": "anomaly-patchcore",
        "activate": True,
    }
    files = {
        "primary": ("model.buf", (paths["primary"] / "model.buf").read_bytes(), "application/octet-stream"),
        "oodd": ("model.buf", (paths["oodd"] / "model.buf").read_bytes(), "application/octet-stream"),
    }
    detector = admin.create_detector()
    upload = admin.post(f"/v1/detectors/{detector['id']}/models", files=files, data={"manifest": json.dumps(manifest)})
    assert upload.status_code == 201, upload.text

    defect = list(generate_anomaly("metal", 0, 1, seed=52, strength=4.0))[0]
    iq = admin.submit(detector["id"], encode_png(defect.rgb))
    assert iq.status_code == 201, iq.text
    body = iq.json()
    assert body["result"]["label"] in ("YES", "NO", "UNCLEAR")
    assert body["result"]["label"] == "YES", body  # a clearly visible defect (strength 4)
    # Where the defect is, as the edge says it: boxes in the Groundlight ROI shape (the
    # review page draws them; its heat map comes from the overlay route).
    assert body["rois"], body
    # The score and severity the edge gives, on the cloud's answer too, and kept with the query.
    assert body["anomaly"]["anomaly_score"] >= 0.5 and body["anomaly"]["severity"] in ("Moderate", "Critical"), body
    assert admin.get(f"/v1/image-queries/{body['id']}").json()["anomaly"] == body["anomaly"]
    ys, xs = defect.mask.nonzero()
    g = body["rois"][0]["geometry"]
    assert body["rois"][0]["label"] == "anomaly" and 0.0 <= g["left"] < g["right"] <= 1.0
    inside = (xs >= g["left"] * 320) & (xs < g["right"] * 320) & (ys >= g["top"] * 320) & (ys < g["bottom"] * 320)
    assert inside.any(), (body["rois"][0], xs.mean(), ys.mean())
    for kind in ("heatmap", "mask", "boxes"):
        response = admin.get(f"/v1/image-queries/{body['id']}/overlay", params={"kind": kind})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (320, 320)
    bad = admin.get(f"/v1/image-queries/{body['id']}/overlay", params={"kind": "xray"})
    assert bad.status_code == 400 and "heatmap" in bad.json()["detail"]


def test_overlay_of_a_classifier_detector_is_a_clear_400(admin, jpeg, helpers) -> None:
    detector = admin.create_detector()
    helpers.upload_model(admin, detector["id"])
    iq = admin.submit(detector["id"], jpeg(200)).json()
    response = admin.get(f"/v1/image-queries/{iq['id']}/overlay")
    assert response.status_code == 400 and "no active anomaly model" in response.json()["detail"]
