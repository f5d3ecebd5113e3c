"""Which labels train: the latest per query, the detector's classes, and RGB + depth pairs
when the camera sends depth (at least half the usable labels), the rest counted."""

from __future__ import annotations

from intellioptics_worker.cloud import DatasetExample
from intellioptics_worker.dataset import download_images, select_depth, select_examples


def _example(index: int, label: str, depth: bool) -> DatasetExample:
    iq = f"iq_{index:04d}"
    depth_url = f"/v1/image-queries/{iq}/depth?view=original" if depth else None
    return DatasetExample(iq, label, "USER", f"/v1/image-queries/{iq}/image", depth_url=depth_url)


def test_pairs_train_a_depth_model_when_at_least_half_the_labels_are_pairs() -> None:
    mostly_pairs = [_example(i, "yes" if i % 2 else "NO", depth=i >= 2) for i in range(6)]
    mostly_pairs.append(_example(9, "UNCLEAR", depth=True))
    selection = select_depth(select_examples(mostly_pairs, "BINARY", ("NO", "YES")))
    assert selection.depth is True
    assert [e.image_query_id for e in selection.examples] == ["iq_0002", "iq_0003", "iq_0004", "iq_0005"]
    assert [e.label for e in selection.examples] == ["NO", "YES", "NO", "YES"]  # canonical, depth kept
    assert selection.skipped == {"unclear": 1, "no_depth": 2}

    mostly_images = [_example(i, "NO", depth=i == 0) for i in range(3)]
    plain = select_depth(select_examples(mostly_images, "BINARY", ("NO", "YES")))
    assert plain.depth is False and len(plain.examples) == 3 and plain.skipped == {}


def test_depth_maps_are_downloaded_only_for_a_depth_model() -> None:
    examples = [_example(0, "NO", depth=True), _example(1, "YES", depth=True)]
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return url.encode()

    pairs = download_images(examples, fetch, depth=True)
    assert [image.depth for image in pairs] == [e.depth_url.encode() for e in examples if e.depth_url]
    fetched.clear()
    images = download_images(examples, fetch)
    assert all(image.depth is None for image in images) and all(url.endswith("/image") for url in fetched)
