import json
import threading

import pytest

from intellioptics_common import model_package as mp
from intellioptics_common.errors import PackageError, PackageIntegrityError

DET = "det_testpackage01"


def _pipeline(kind="primary"):
    return mp.PipelineConfig(kind=kind, mode="BINARY", class_names=("NO", "YES"), output="probabilities")


def _metadata(kind="primary"):
    return mp.PredictorMetadata(
        detector_id=DET, kind=kind, trainer="fast", backbone_id="efficientnet_lite0", training_set_size=10,
        metrics={"balanced_accuracy": 0.9},
    )  # fmt: skip


def _write(models, payload=b"onnx-bytes", kind="primary", **kwargs):
    return mp.write_version(
        models, DET, kind, model_bytes=payload, pipeline=_pipeline(kind), metadata=_metadata(kind),
        model_id=f"mdl_{payload.hex()[:8]}", **kwargs,
    )  # fmt: skip


def test_write_then_read_roundtrip(tmp_path):
    path = _write(tmp_path)
    assert path == tmp_path / DET / "primary" / "1"
    package = mp.read_version(path)
    assert package.version == 1
    assert package.detector_id == DET
    assert package.pipeline == _pipeline()
    assert package.metadata.metrics == {"balanced_accuracy": 0.9}
    assert package.model_bytes() == b"onnx-bytes"
    assert package.model_sha256 == mp.sha256_bytes(b"onnx-bytes")
    assert sorted(p.name for p in path.iterdir()) == sorted([*mp.PACKAGE_FILES, mp.MANIFEST_FILE])


def test_versions_increment_and_only_last_two_are_kept(tmp_path):
    for i in range(4):
        _write(tmp_path, payload=bytes([i]) * 4)
    assert mp.list_versions(tmp_path, DET, "primary") == [3, 4]
    latest = mp.read_latest(tmp_path, DET, "primary")
    assert latest is not None and latest.version == 4
    assert mp.list_detectors(tmp_path) == [DET]


def test_flipped_byte_is_refused(tmp_path):
    path = _write(tmp_path, payload=b"0123456789")
    model = path / mp.MODEL_FILE
    data = bytearray(model.read_bytes())
    data[3] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(PackageIntegrityError, match="sha256"):
        mp.read_version(path)


def test_edited_pipeline_config_is_refused(tmp_path):
    path = _write(tmp_path)
    (path / mp.PIPELINE_FILE).write_text(_pipeline().to_yaml().replace("NO", "OK"))
    with pytest.raises(PackageIntegrityError):
        mp.read_version(path)


def test_missing_file_is_refused(tmp_path):
    path = _write(tmp_path)
    (path / mp.METADATA_FILE).unlink()
    with pytest.raises(PackageIntegrityError, match="missing"):
        mp.read_version(path)


def test_expected_sha_mismatch_leaves_nothing_behind(tmp_path):
    with pytest.raises(PackageIntegrityError):
        _write(tmp_path, expected_sha256="0" * 64)
    assert mp.list_versions(tmp_path, DET, "primary") == []
    kind_dir = tmp_path / DET / "primary"
    assert not kind_dir.exists() or not any(kind_dir.iterdir())


def test_staging_directories_are_invisible_to_readers(tmp_path):
    (tmp_path / DET / "primary" / ".7.tmp-abc").mkdir(parents=True)
    (tmp_path / DET / "primary" / "notaversion").mkdir()
    assert mp.latest_version(tmp_path, DET, "primary") is None
    _write(tmp_path)
    assert mp.list_versions(tmp_path, DET, "primary") == [1]
    assert not (tmp_path / DET / "primary" / ".7.tmp-abc").exists()  # pruned


def test_versions_are_immutable(tmp_path):
    _write(tmp_path, version=5)
    with pytest.raises(PackageError, match="immutable"):
        _write(tmp_path, version=5)


def test_kind_mismatch_and_bad_detector_id(tmp_path):
    with pytest.raises(PackageError):
        mp.write_version(tmp_path, DET, "oodd", model_bytes=b"x", pipeline=_pipeline("primary"),
                         metadata=_metadata("oodd"), model_id="m")  # fmt: skip
    with pytest.raises(PackageError, match="not a valid detector id"):
        mp.kind_dir(tmp_path, "../../etc", "primary")


def test_concurrent_readers_never_see_partial_versions(tmp_path):
    _write(tmp_path, payload=b"v1")
    errors: list[Exception] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                package = mp.read_latest(tmp_path, DET, "primary")
                assert package is not None
            except Exception as exc:  # collected for the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    # A version pruned while a reader reads it makes the reader take the newer one, never fail.
    for i in range(60):
        _write(tmp_path, payload=f"v{i + 2}".encode())
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.parametrize(
    "mutation, message",
    [
        ({"kind": "teacher"}, "kind"),
        ({"class_names": []}, "class_names"),
        ({"input": {"height": 2, "width": 2}}, "input size"),
        ({"input": {"mean": [1, 2]}}, "mean"),
        ({"format_version": 99}, "newer"),
        ({"mode": None, "class_names": None}, "invalid"),
    ],
)
def test_pipeline_config_validation(mutation, message):
    data = _pipeline().to_dict()
    data.update(mutation)
    with pytest.raises(PackageError, match=message):
        mp.PipelineConfig.from_dict(data)


def test_pipeline_yaml_errors():
    with pytest.raises(PackageError, match="YAML"):
        mp.PipelineConfig.from_yaml("kind: [unclosed")
    with pytest.raises(PackageError, match="mapping"):
        mp.PipelineConfig.from_yaml("- a list")


def test_metadata_json_roundtrip_and_errors():
    meta = _metadata()
    assert mp.PredictorMetadata.from_json(meta.to_json()) == meta
    with pytest.raises(PackageError):
        mp.PredictorMetadata.from_json(json.dumps({"unknown": 1}))


def test_read_latest_gives_way_to_the_newer_version_when_the_listed_one_is_pruned(tmp_path, monkeypatch):
    for n in range(3):
        _write(tmp_path, payload=f"v{n + 1}".encode())
    assert mp.list_versions(tmp_path, DET, "primary") == [2, 3]
    real = mp.latest_version
    answers = iter([1])  # the reader listed version 1 just before a writer pruned it

    def listed_then_real(*args):
        return next(answers, None) or real(*args)

    monkeypatch.setattr(mp, "latest_version", listed_then_real)
    assert mp.read_latest(tmp_path, DET, "primary").version == 3
    # A broken newest version with nothing newer is still an error, not silently skipped.
    (tmp_path / DET / "primary" / "3" / "model_id.txt").unlink()
    with pytest.raises(PackageIntegrityError, match="missing model_id.txt"):
        mp.read_latest(tmp_path, DET, "primary")
    # Pruning leaves no half-deleted version behind under its number.
    _write(tmp_path, payload=b"v4")
    assert sorted(p.name for p in (tmp_path / DET / "primary").iterdir()) == ["3", "4"]
