"""RGB + depth through ``POST /infer``: a package trained by the training library with
``--depth`` gets its second input from the ``depth`` part and answers as the library
does; without a depth map, or with a bad one, it answers a 400 that says what to send."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from intellioptics_common.schemas import InferenceResult
from intellioptics_inference.bench import default_backbone
from tests.support.depth_models import DepthCase, cases, library_answer, npy, train_depth_package

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
DET = "det_depth"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DepthCase]]:
    if not default_backbone().is_file():
        pytest.fail(f"{default_backbone()} is missing: run `make backbone` (make test builds it)")
    models = tmp_path_factory.mktemp("depth-models")
    train_depth_package(models, DET)
    return models, cases(2, seed=9)


@pytest.fixture
def installed(trained: tuple[Path, list[DepthCase]], models_dir: Path) -> list[DepthCase]:
    (models_dir / DET).symlink_to(trained[0] / DET, target_is_directory=True)
    return trained[1]


def parts(image: bytes, depth: bytes | None = None) -> dict[str, tuple[str, bytes, str]]:
    form = {"image": ("frame.png", image, "image/png")}
    if depth is not None:
        form["depth"] = ("frame_depth", depth, "application/octet-stream")
    return form


async def test_depth_packages_answer_like_the_training_library(app_client, trained, installed) -> None:
    source, _ = trained
    async with app_client() as client:
        for case in installed:
            for depth in (case.depth_npy, case.depth_png):
                response = await client.post("/infer", params={"detector_id": DET}, files=parts(case.rgb_png, depth))
                assert response.status_code == 200, response.text
                result = InferenceResult.model_validate_json(response.content)
                reference = library_answer(source, DET, case.rgb_png, depth)
                assert result.label == reference.label
                assert result.confidence == pytest.approx(reference.confidence, abs=1e-4)
                assert result.oodd_in_domain_score == pytest.approx(reference.in_domain, abs=1e-4)
                for name, value in reference.probabilities.items():
                    # Relative too: the losing class's probability carries the logit margin.
                    assert result.probabilities[name] == pytest.approx(value, abs=1e-4, rel=1e-3)
            # The model trained on float maps; a 16-bit PNG holds whole millimetres only.
            float_answer = await client.post(
                "/infer", params={"detector_id": DET}, files=parts(case.rgb_png, case.depth_npy)
            )
            assert float_answer.json()["label"] == case.label
        # The depth decides: the YES image with the NO pair's flat depth map answers NO.
        yes = next(c for c in installed if c.label == "YES")
        no = next(c for c in installed if c.label == "NO")
        swapped = await client.post("/infer", params={"detector_id": DET}, files=parts(yes.rgb_png, no.depth_npy))
        assert swapped.json()["label"] == "NO"
        ready = (await client.get(f"/detectors/{DET}/ready")).json()
        assert ready["fused"] is False  # two inputs: no shared backbone pass


async def test_a_depth_model_refuses_an_image_without_depth(app_client, installed) -> None:
    image = installed[0].rgb_png
    async with app_client() as client:
        for response in (
            await client.post("/infer", params={"detector_id": DET}, content=image),
            await client.post("/infer", params={"detector_id": DET}, files=parts(image)),
        ):
            assert response.status_code == 400
            body = response.json()
            assert body["code"] == "depth_required"
            assert "trained with depth" in body["detail"] and "`depth` part" in body["detail"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bad_depth_maps(good: np.ndarray) -> list[tuple[str, bytes, str]]:
    """(what, depth bytes, what the 400 says) for every kind of unusable depth map."""
    nan = good.copy()
    nan[10:20, 10:20] = np.nan
    return [
        ("another frame's aspect", npy(good[:, : good.shape[1] // 2]), "aspect ratios differ"),
        ("NaN", npy(nan), "NaN or infinite"),
        ("all zeros", npy(np.zeros_like(good)), "all zeros"),
        ("8-bit PNG", _png(np.full(good.shape, 120, dtype=np.uint8)), "8 bits per channel"),
        ("garbage", b"this is not a depth map", "neither a readable PNG nor a .npy"),
        ("mostly no readings", npy(np.where(np.arange(good.shape[1]) < good.shape[1] * 0.7, 0, good)), "readings"),
    ]


async def test_bad_depth_maps_are_refused_with_what_to_send(app_client, installed) -> None:
    case = installed[0]
    async with app_client() as client:
        for what, depth, message in bad_depth_maps(case.depth_mm):
            response = await client.post("/infer", params={"detector_id": DET}, files=parts(case.rgb_png, depth))
            assert response.status_code == 400, what
            assert response.json()["code"] == "invalid_depth", what
            assert message in response.json()["detail"], (what, response.json())
        # A depth map at another resolution of the same frame is resized, not refused.
        half = np.asarray(Image.fromarray(case.depth_mm).resize((160, 160), Image.Resampling.BILINEAR))
        response = await client.post("/infer", params={"detector_id": DET}, files=parts(case.rgb_png, npy(half)))
        assert response.status_code == 200 and response.json()["label"] == case.label


async def test_image_only_models_ignore_a_depth_part(app_client, models_dir: Path, kit: SimpleNamespace) -> None:
    kit.write_detector(models_dir, "det_plain")
    image = kit.jpeg()
    depth = npy(np.full((48, 64), 500.0, dtype=np.float32))
    async with app_client() as client:
        plain = await client.post("/infer", params={"detector_id": "det_plain"}, content=image)
        with_depth = await client.post(
            "/infer", params={"detector_id": "det_plain"}, files={"image": ("a.jpg", image), "depth": ("d", depth)}
        )
        assert plain.status_code == with_depth.status_code == 200
        assert with_depth.json()["probabilities"] == plain.json()["probabilities"]


async def test_multipart_bodies_of_another_shape_are_refused(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_plain")
    async with app_client() as client:
        no_image = await client.post("/infer", params={"detector_id": "det_plain"}, files={"depth": ("d", b"x")})
        other = await client.post(
            "/infer", params={"detector_id": "det_plain"}, files={"image": ("a", kit.jpeg()), "mask": ("m", b"x")}
        )
        text = await client.post(
            "/infer", params={"detector_id": "det_plain"}, data={"image": "x"}, files={"depth": ("d", b"x")}
        )
    assert no_image.status_code == 400 and "no `image` part" in no_image.json()["detail"]
    assert other.status_code == 400 and "'mask'" in other.json()["detail"]
    assert text.status_code == 400 and "multipart body could not be read" in text.json()["detail"]
