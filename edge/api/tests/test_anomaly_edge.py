"""An anomaly detector through the deployed edge: a package trained from good images by
the training library, served by the real inference service behind the edge API and
nginx, asked by the real ``groundlight`` SDK 1.3.1. Its boxes arrive as ``rois``."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from groundlight import Groundlight
from PIL import Image

from intellioptics_training.anomaly import AnomalyOptions, export_anomaly_package, train_anomaly
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import Sample, prepare_good
from intellioptics_training.features import BackboneRunner
from intellioptics_training.synthetic import encode_png, generate_anomaly
from tests.support.edge_stack import EdgeStack, edge_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DET = "det_" + "Anomaly0Surface0Detector001"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    base = tmp_path_factory.mktemp("anomaly-edge")
    good = [g.rgb for g in generate_anomaly("metal", 10, 0, seed=41, strength=4.0)]
    trained = train_anomaly(
        prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT),
        AnomalyOptions(max_bank_patches=1024, folds=4),
        runner=BackboneRunner(threads=2),
    )
    export_anomaly_package(base / "models", DET, trained)
    config = {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "detectors": [
            {
                "detector_id": DET,
                "edge_inference_config": "no_cloud",
                "name": "surface",
                "query": "Is the surface defective?",
                "confidence_threshold": 0.6,
            }
        ],
    }
    with edge_stack(base, config, models_dir=base / "models") as running:
        yield running


def test_defect_boxes_arrive_through_the_sdk_as_rois(stack: EdgeStack) -> None:
    sdk = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    images = list(generate_anomaly("metal", 1, 3, seed=42, strength=4.0))
    good, defects = images[0], images[1:]
    found = 0
    for image in defects:
        iq = sdk.submit_image_query(DET, encode_png(image.rgb), wait=0)
        assert iq.result.label.value in ("YES", "NO") and 0.0 <= iq.result.confidence <= 1.0
        if iq.result.label.value != "YES":
            continue
        found += 1
        assert iq.rois, "an anomalous answer carries its boxes"
        ys, xs = np.nonzero(image.mask)
        for roi in iq.rois:
            assert roi.label == "anomaly" and 0.5 <= roi.score <= 1.0
            g = roi.geometry
            assert 0.0 <= g.left < g.right <= 1.0 and 0.0 <= g.top < g.bottom <= 1.0
        # The best box touches the true defect.
        g = iq.rois[0].geometry
        inside = (xs >= g.left * 320) & (xs < g.right * 320) & (ys >= g.top * 320) & (ys < g.bottom * 320)
        assert inside.any(), (iq.rois[0], xs.mean(), ys.mean())
    assert found >= 2, "clearly visible defects are flagged"

    clean = sdk.submit_image_query(DET, encode_png(good.rgb), wait=0)
    assert clean.result.label.value == "NO" and not clean.rois

    # The extras the SDK ignores are on the wire for clients that want them.
    raw = httpx.get(f"{stack.gateway_url}/device-api/v1/image-queries/{iq.id}", headers={"x-api-token": stack.token})
    body = raw.json()
    assert body["anomaly"]["severity"] in ("Normal", "Potential", "Moderate", "Critical")
    assert 0.0 <= body["anomaly"]["anomaly_score"] <= 1.0


def test_overlay_route_draws_heatmap_mask_and_boxes(stack: EdgeStack) -> None:
    sdk = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    image = list(generate_anomaly("metal", 0, 1, seed=43, strength=4.0))[0]
    small = Image.fromarray(image.rgb).resize((240, 180))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=92)
    iq = sdk.submit_image_query(DET, buffer.getvalue(), wait=0)
    headers = {"x-api-token": stack.token}
    for kind in ("heatmap", "mask", "boxes"):
        response = httpx.get(
            f"{stack.gateway_url}/v1/image-queries/{iq.id}/overlay", params={"kind": kind}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (240, 180)
    bad = httpx.get(f"{stack.gateway_url}/v1/image-queries/{iq.id}/overlay", params={"kind": "xray"}, headers=headers)
    assert bad.status_code == 400 and "heatmap" in bad.json()["detail"]
    missing = httpx.get(f"{stack.gateway_url}/v1/image-queries/iq_nope/overlay", headers=headers)
    assert missing.status_code == 404


def test_batch_route_answers_every_image_with_a_summary(stack: EdgeStack) -> None:
    images = list(generate_anomaly("metal", 2, 2, seed=44, strength=4.0))
    files = [("images", (f"{i}.png", encode_png(g.rgb), "image/png")) for i, g in enumerate(images)]
    files.append(("images", ("broken.jpg", b"\xff\xd8\xff nope", "image/jpeg")))
    headers = {"x-api-token": stack.token}
    url = f"{stack.gateway_url}/v1/image-queries/batch"
    response = httpx.post(url, params={"detector_id": DET}, files=files, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    results, summary = body["results"], body["summary"]
    assert [r["filename"] for r in results] == ["0.png", "1.png", "2.png", "3.png", "broken.jpg"]
    assert results[-1]["error"] and results[-1]["label"] is None
    assert summary["total"] == 5 and summary["answered"] == 4 and summary["errors"] == 1
    assert sum(summary["per_severity"].values()) == 4
    assert summary["flagged"] == sum(r["label"] == "YES" for r in results[:4]) and summary["mean_ms"] > 0
    assert [r["label"] for r in results[:2]] == ["NO", "NO"]
    empty = httpx.post(url, params={"detector_id": DET}, data={"note": "x"}, files=[], headers=headers)
    assert empty.status_code == 400, empty.text
