"""``POST /v1/image-queries/batch`` (an edge's outbox): each item answered as
``POST /image-queries`` would answer it, one transaction, ids deduplicated."""

from __future__ import annotations

import base64
import json

from intellioptics_common.ids import new_id


def _item(detector_id: str, image: bytes, **fields: object) -> dict[str, object]:
    metadata = base64.urlsafe_b64encode(json.dumps({"is_from_edge": True}).encode()).decode().rstrip("=")
    return {
        "detector_id": detector_id,
        "image_query_id": new_id("iq"),
        "content_type": "image/jpeg",
        "image": base64.b64encode(image).decode(),
        "metadata": metadata,
        **fields,
    }


def test_each_item_gets_its_own_status_and_ids_are_deduplicated(admin, jpeg, settings, helpers) -> None:
    detector = admin.create_detector()
    off = admin.create_detector()
    assert admin.patch(f"/v1/detectors/{off['id']}", json={"status": "OFF"}).status_code == 200
    stored = admin.submit(detector["id"], jpeg(), image_query_id=new_id("iq")).json()
    new = _item(detector["id"], jpeg(), confidence_threshold="0.8", human_review="ALWAYS", inspection_id="i-7")
    items = [
        new,
        {**new},  # the same id twice in one batch
        {**_item(detector["id"], jpeg()), "image_query_id": stored["id"]},  # stored before
        _item(detector["id"], b"not an image"),
        _item(off["id"], jpeg()),
        {**_item(detector["id"], jpeg()), "image": "%%% not base64"},
        _item("det_" + "N" * 27, jpeg()),
    ]
    response = admin.post("/v1/image-queries/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 200, 400, 409, 400, 404]
    assert [r["image_query_id"] for r in results] == [i["image_query_id"] for i in items]
    assert results[4]["code"] == "detector_off" and "OFF" in results[4]["detail"]
    assert "base64" in results[5]["detail"]
    query = admin.get(f"/v1/image-queries/{new['image_query_id']}").json()
    assert query["confidence_threshold"] == 0.8 and query["metadata"] == {"is_from_edge": True}
    assert helpers.count_rows(settings, "image_queries") == 2
    assert helpers.count_rows(settings, "review_items") == 2  # one each, not one per arrival
    assert len(helpers.blob_files(settings)) == 2  # nothing left of the refused or repeated items


def test_a_bad_batch_is_a_clear_400_and_a_bad_token_is_refused_before_it(admin, client, jpeg) -> None:
    detector = admin.create_detector()
    bad = admin.post("/v1/image-queries/batch", json={"items": [{"detector_id": detector["id"]}]})
    assert bad.status_code == 400 and "items.0" in bad.json()["detail"], bad.text
    empty = admin.post("/v1/image-queries/batch", json={"items": []})
    assert empty.status_code == 400
    too_many = admin.post("/v1/image-queries/batch", json={"items": [_item(detector["id"], jpeg())] * 51})
    assert too_many.status_code == 400 and "50" in too_many.json()["detail"]
    anonymous = client.post("/v1/image-queries/batch", json={"items": [_item(detector["id"], jpeg())]})
    assert anonymous.status_code == 401
