from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from intellioptics_common import confidence as conf
from intellioptics_common import ids, schemas
from intellioptics_common.model_package import InputSpec
from intellioptics_common.preprocessing import to_input_tensor
from intellioptics_common.settings import BaseServiceSettings


def test_adjustment_matches_groundlight_rule():
    # in-domain: unchanged; fully out of domain: chance level; halfway: the average
    assert conf.adjust_confidence(0.98, 0.0, 2) == pytest.approx(0.98)
    assert conf.adjust_confidence(0.98, 1.0, 2) == pytest.approx(0.5)
    assert conf.adjust_confidence(0.98, 0.5, 2) == pytest.approx(0.74)
    assert conf.adjust_confidence(0.9, 1.0, 4) == pytest.approx(0.25)


def test_prediction_from_probabilities():
    prediction = conf.predict_from_probabilities([0.1, 0.9], conf.BINARY_CLASS_NAMES, in_domain_score=0.6)
    assert prediction.label == "YES"
    assert prediction.raw_primary_confidence == pytest.approx(0.9)
    assert prediction.p_out == pytest.approx(0.4)
    assert prediction.confidence == pytest.approx(0.4 * 0.5 + 0.6 * 0.9)
    plain = conf.predict_from_probabilities([0.7, 0.2, 0.1], ("a", "b", "c"), in_domain_score=None)
    assert (plain.label, plain.confidence) == ("a", pytest.approx(0.7))
    with pytest.raises(ValueError):
        conf.predict_from_probabilities([0.5], ("a", "b"), None)


def test_confidence_threshold_and_labels():
    assert conf.is_confident(0.9, 0.9)
    assert not conf.is_confident(0.89, 0.9)
    assert not conf.is_confident(None, 0.0)
    assert conf.normalize_binary_label("pass") == schemas.BinaryLabel.YES
    assert conf.normalize_binary_label(" No ") == schemas.BinaryLabel.NO
    assert conf.normalize_binary_label("NEEDS_REVIEW") == schemas.BinaryLabel.UNCLEAR
    with pytest.raises(ValueError, match="YES, NO or UNCLEAR"):
        conf.normalize_binary_label("MAYBE")


def test_ids_are_groundlight_shaped_and_unique():
    made = {ids.new_id("det") for _ in range(200)}
    assert len(made) == 200
    for value in made:
        assert value.startswith("det_") and len(value) == 31
        assert ids.is_valid_id(value, "det")
    assert not ids.is_valid_id("det_../../etc/passwd", "det")
    assert not ids.is_valid_id(ids.new_id("iq"), "det")


def _image_query(**result):
    return schemas.ImageQuery(
        id=ids.new_id("iq"), created_at=datetime.now(UTC), query="Is there a crack?", detector_id=ids.new_id("det"),
        result_type=schemas.ResultType.BINARY_CLASSIFICATION, result=result or None, patience_time=30,
        confidence_threshold=0.9, metadata={"k": "v"},
    )  # fmt: skip


def test_image_query_json_parses_in_the_groundlight_sdk():
    model = pytest.importorskip("model")  # the SDK's own pydantic models (groundlight 1.3.1)
    iq = _image_query(
        label="YES", confidence=0.95, source="ALGORITHM", from_edge=True, result_type="binary_classification"
    )
    parsed = model.ImageQuery.model_validate_json(iq.model_dump_json())
    assert parsed.result.label == "YES"
    assert parsed.result.from_edge is True
    assert parsed.result_type.value == "binary_classification"
    pending = model.ImageQuery.model_validate_json(_image_query().model_dump_json())
    assert pending.result is None
    detector = schemas.Detector(
        id=ids.new_id("det"), created_at=datetime.now(UTC), name="n", query="q?", group_name="g"
    )
    assert model.Detector.model_validate_json(detector.model_dump_json()).confidence_threshold == 0.9


def test_result_union_is_discriminated():
    iq = _image_query(label="NO", confidence=0.6, source="EDGE", result_type="binary_classification")
    assert isinstance(iq.result, schemas.BinaryClassificationResult)
    multi = schemas.ImageQuery.model_validate(
        {**iq.model_dump(), "result_type": "multi_classification",
         "result": {"label": "scratch", "confidence": 0.8, "result_type": "multi_classification"}}
    )  # fmt: skip
    assert isinstance(multi.result, schemas.MultiClassificationResult)
    with pytest.raises(ValidationError):
        _image_query(label="PERHAPS", result_type="binary_classification")


def test_requests_refuse_unknown_fields_and_out_of_range_values():
    with pytest.raises(ValidationError):
        schemas.DetectorCreate(name="a", query="b", unknown=1)
    with pytest.raises(ValidationError):
        schemas.DetectorCreate(name="a", query="b", confidence_threshold=1.5)
    with pytest.raises(ValidationError):
        schemas.DetectorCreate(name="a" * 201, query="b")
    assert schemas.DetectorPatch(confidence_threshold=0.8).model_dump(exclude_unset=True) == {
        "confidence_threshold": 0.8
    }


def test_preprocessing_layout_and_normalisation():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 255
    tensor = to_input_tensor(rgb, InputSpec(height=32, width=32))
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    assert tensor[0, 0].mean() == pytest.approx((255 - 127) / 128)
    assert tensor[0, 1].mean() == pytest.approx(-127 / 128)


def test_placeholder_secrets_refused_in_production():
    class Secretive(BaseServiceSettings):
        secret_key: str = "changeme"

        def secret_fields(self):
            return {"secret_key": self.secret_key}

    assert Secretive(environment="development").secret_key == "changeme"
    with pytest.raises(ValidationError, match="INTELLIOPTICS_SECRET_KEY"):
        Secretive(environment="production")
    assert Secretive(environment="production", secret_key="a-real-long-secret").secret_key
