"""The review queue: claims with expiring locks, label, skip, undo, stats."""

from __future__ import annotations

import threading


def _pending(admin, jpeg, n: int, **detector_fields):  # type: ignore[no-untyped-def]
    detector = admin.create_detector(**detector_fields)
    iqs = [admin.submit(detector["id"], jpeg()).json() for _ in range(n)]
    return detector, iqs


def test_queue_lists_items_with_everything_a_reviewer_needs(admin, jpeg) -> None:
    detector, iqs = _pending(admin, jpeg, 2, mode="MULTI_CLASS", mode_configuration={"class_names": ["a", "b", "c"]})
    reviewer = admin.new_token("reviewer", name="rita")
    queue = reviewer.get("/v1/review/queue", params={"detector_id": detector["id"]}).json()
    assert queue["count"] == 2 and queue["oldest_age_s"] >= 0
    item = queue["items"][0]
    assert item["image_query_id"] == iqs[0]["id"] and item["detector_name"] == detector["name"]
    assert item["class_names"] == ["a", "b", "c"] and item["mode"] == "MULTI_CLASS" and item["status"] == "pending"
    assert item["image_url"] == f"/v1/image-queries/{iqs[0]['id']}/image"
    assert reviewer.get(item["image_url"]).status_code == 200
    assert reviewer.get("/v1/review/queue", params={"limit": 1}).json()["count"] == 2
    assert len(reviewer.get("/v1/review/queue", params={"limit": 1}).json()["items"]) == 1
    assert reviewer.get("/v1/review/queue", params={"limit": 0}).status_code == 422


def test_two_reviewers_never_get_the_same_item(admin, jpeg) -> None:
    _pending(admin, jpeg, 6)
    reviewers = [admin.new_token("reviewer", name=f"r{i}") for i in range(3)]
    claimed: list[str] = []
    lock = threading.Lock()

    def work(api) -> None:  # type: ignore[no-untyped-def]
        for _ in range(3):
            response = api.post("/v1/review/claim")
            if response.status_code == 200:
                with lock:
                    claimed.append(response.json()["id"])
                api.post(f"/v1/review/items/{response.json()['id']}/label", json={"label": "YES"})

    threads = [threading.Thread(target=work, args=(r,)) for r in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == len(set(claimed)) == 6
    assert reviewers[0].post("/v1/review/claim").status_code == 204


def test_claim_label_and_expired_locks(admin, jpeg, client, clock) -> None:
    _pending(admin, jpeg, 2)
    alice = admin.new_token("reviewer", name="alice")
    bob = admin.new_token("reviewer", name="bob")
    first = alice.post("/v1/review/claim").json()
    assert first["status"] == "claimed" and first["claimed_by"] == "alice" and first["claim_expires_at"]
    assert alice.post("/v1/review/claim").json()["id"] == first["id"]  # reload: the same item
    ahead = alice.post("/v1/review/claim", params={"ahead": 1}).json()  # the UI keeps the next one ready
    assert ahead["id"] != first["id"] and ahead["claimed_by"] == "alice"
    assert alice.post(f"/v1/review/items/{ahead['id']}/skip").status_code == 200
    second = bob.post("/v1/review/claim").json()
    assert second["id"] != first["id"]
    stolen = bob.post(f"/v1/review/items/{first['id']}/label", json={"label": "YES"})
    assert stolen.status_code == 409 and "not claimed by you" in stolen.json()["detail"]
    # Let alice's claim expire: it is then free for anyone, and her late label is refused.
    client.app.state.resources.settings.__dict__["review_lock_s"] = 0.2
    alice_item = alice.post("/v1/review/claim").json()  # refresh with the short lock
    clock.advance(0.4)
    late = alice.post(f"/v1/review/items/{alice_item['id']}/label", json={"label": "NO"})
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    client.app.state.resources.settings.__dict__["review_lock_s"] = 120
    bob.post(f"/v1/review/items/{second['id']}/label", json={"label": "NO"})
    taken_over = bob.post("/v1/review/claim").json()
    assert taken_over["id"] == first["id"] and taken_over["claimed_by"] == "bob"
    labeled = bob.post(f"/v1/review/items/{first['id']}/label", json={"label": "UNCLEAR"})
    assert labeled.status_code == 200 and labeled.json()["status"] == "labeled" and labeled.json()["label"] == "UNCLEAR"
    iq = admin.get(f"/v1/image-queries/{first['image_query_id']}").json()
    assert iq["result"]["label"] == "UNCLEAR" and iq["result"]["source"] == "USER"
    bad = bob.post(f"/v1/review/items/{first['id']}/label", json={"label": "PERHAPS"})
    assert bad.status_code == 409
    assert bob.post("/v1/review/items/rvw_nope12345678/label", json={"label": "YES"}).status_code == 404
    assert bob.post(f"/v1/review/items/{first['id']}/label", json={"lbl": "YES"}).status_code == 422


def test_skip_puts_the_item_last_for_that_reviewer(admin, jpeg) -> None:
    _pending(admin, jpeg, 2)
    alice = admin.new_token("reviewer", name="alice")
    bob = admin.new_token("reviewer", name="bob")
    first = alice.post("/v1/review/claim").json()
    skipped = alice.post(f"/v1/review/items/{first['id']}/skip").json()
    assert skipped["status"] == "skipped" and skipped["claimed_by"] is None
    second = alice.post("/v1/review/claim").json()
    assert second["id"] != first["id"]
    assert bob.post("/v1/review/claim").json()["id"] == first["id"]
    assert alice.post(f"/v1/review/items/{first['id']}/skip").status_code == 409


def test_release_gives_the_claim_back_keeping_the_items_place(admin, jpeg) -> None:
    _pending(admin, jpeg, 3)
    alice = admin.new_token("reviewer", name="alice")
    bob = admin.new_token("reviewer", name="bob")
    first = alice.post("/v1/review/claim").json()
    second = alice.post("/v1/review/claim", params={"ahead": 1}).json()
    assert first["id"] != second["id"]
    # Released in the other order: the queue order is the items' own, not the releases'.
    for item in (second, first):
        released = alice.post(f"/v1/review/items/{item['id']}/release")
        assert released.status_code == 200, released.text
        assert released.json()["status"] == "pending" and released.json()["claimed_by"] is None
    queue = alice.get("/v1/review/queue").json()["items"]
    assert [i["id"] for i in queue[:2]] == [first["id"], second["id"]]
    # Unlike a skip, a release does not put the item last for the one who released it.
    assert alice.post("/v1/review/claim").json()["id"] == first["id"]
    # Releasing what one does not hold changes nothing: bob cannot free alice's claim.
    assert bob.post(f"/v1/review/items/{first['id']}/release").json()["status"] == "claimed"
    assert bob.post("/v1/review/claim").json()["id"] == second["id"]
    # A skip still sends the item to the back of alice's line.
    alice.post(f"/v1/review/items/{first['id']}/skip")
    third = alice.post("/v1/review/claim").json()
    assert third["id"] not in (first["id"], second["id"])
    assert alice.post("/v1/review/items/ri_missing/release").status_code == 404


def test_undo_reverts_the_answer_and_reclaims(admin, jpeg) -> None:
    _pending(admin, jpeg, 1)
    alice = admin.new_token("reviewer", name="alice")
    bob = admin.new_token("reviewer", name="bob")
    item = alice.post("/v1/review/claim").json()
    alice.post(f"/v1/review/items/{item['id']}/label", json={"label": "YES"})
    assert bob.post(f"/v1/review/items/{item['id']}/undo").status_code == 409
    undone = alice.post(f"/v1/review/items/{item['id']}/undo")
    assert undone.status_code == 200
    body = undone.json()
    assert body["status"] == "claimed" and body["claimed_by"] == "alice" and body["label"] is None
    iq = admin.get(f"/v1/image-queries/{item['image_query_id']}").json()
    assert iq["result"]["source"] == "STILL_PROCESSING" and iq["done_processing"] is False
    assert alice.post(f"/v1/review/items/{item['id']}/undo").status_code == 409
    assert alice.post(f"/v1/review/items/{item['id']}/label", json={"label": "NO"}).json()["label"] == "NO"


def test_stats(admin, jpeg) -> None:
    first, _ = _pending(admin, jpeg, 2)
    second, _ = _pending(admin, jpeg, 1)
    stats = admin.get("/v1/review/stats").json()
    assert stats["total_pending"] == 3 and stats["oldest_age_s"] >= 0
    per = {d["detector_id"]: d["pending"] for d in stats["per_detector"]}
    assert per == {first["id"]: 2, second["id"]: 1}


def _box(left: float, top: float, right: float, bottom: float) -> dict:
    return {"label": "bolt", "geometry": {"left": left, "top": top, "right": right, "bottom": bottom}}


def test_box_items_carry_what_the_box_editor_needs_and_store_its_boxes(admin, jpeg) -> None:
    config = {"class_name": "bolt", "max_num_bboxes": 2}
    detector, iqs = _pending(admin, jpeg, 2, mode="BOUNDING_BOX", mode_configuration=config)
    reviewer = admin.new_token("reviewer", name="boxer")
    item = reviewer.post("/v1/review/claim").json()
    assert item["mode"] == "BOUNDING_BOX" and item["mode_configuration"] == config
    assert item["result"]["result_type"] == "bounding_box" and item["rois"] is None  # no model: no pre-labels
    too_many = [_box(0.1, 0.1, 0.2, 0.2), _box(0.3, 0.3, 0.4, 0.4), _box(0.5, 0.5, 0.6, 0.6)]
    refused = reviewer.post(f"/v1/review/items/{item['id']}/label", json={"label": "BOUNDING_BOX", "rois": too_many})
    assert refused.status_code == 400 and "max_num_bboxes is 2" in refused.json()["detail"]
    assert admin.get(f"/v1/image-queries/{item['image_query_id']}").json()["result"]["source"] == "STILL_PROCESSING"
    boxes = [_box(0.1, 0.2, 0.3, 0.4)]
    stored = reviewer.post(f"/v1/review/items/{item['id']}/label", json={"label": "BOUNDING_BOX", "rois": boxes})
    assert stored.status_code == 200, stored.text
    assert stored.json()["result"]["label"] == "BOUNDING_BOX"
    assert [r["geometry"]["left"] for r in stored.json()["rois"]] == [0.1]

    counting, _ = _pending(admin, jpeg, 1, mode="COUNT", mode_configuration={"class_name": "bolt", "max_count": 5})
    item = reviewer.post("/v1/review/claim", params={"detector_id": counting["id"]}).json()
    assert item["mode_configuration"] == {"class_name": "bolt", "max_count": 5}
    counted = reviewer.post(f"/v1/review/items/{item['id']}/label", json={"label": "3"})
    assert counted.status_code == 200 and counted.json()["result"]["count"] == 3 and counted.json()["label"] == "3"
