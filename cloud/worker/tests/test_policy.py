"""Dataset selection, evaluation splits, metrics and the promotion policy."""

from __future__ import annotations

import pytest

from intellioptics_worker.cloud import DatasetExample
from intellioptics_worker.dataset import check_trainable, select_examples
from intellioptics_worker.errors import DatasetError
from intellioptics_worker.promotion import decide
from intellioptics_worker.scoring import Scored, measure


def _example(iq: str, label: str) -> DatasetExample:
    return DatasetExample(iq, label, "USER", f"/v1/image-queries/{iq}/image")


def test_selection_keeps_latest_label_and_drops_unclear_and_unknown():
    rows = [_example("iq_1", "YES"), _example("iq_2", "pass"), _example("iq_3", "UNCLEAR"), _example("iq_1", "NO"),
            _example("iq_4", "maybe")]  # fmt: skip
    selection = select_examples(rows, "BINARY", ("NO", "YES"))
    assert [(e.image_query_id, e.label) for e in selection.examples] == [("iq_1", "NO"), ("iq_2", "YES")]
    assert selection.skipped == {"unclear": 1, "unknown_class": 1}


def test_check_trainable_names_the_missing_class():
    assert check_trainable(["NO", "YES", "YES", "NO"], ("NO", "YES"), 2) == {"NO": 2, "YES": 2}
    with pytest.raises(DatasetError, match="NO: 0"):
        check_trainable(["YES"] * 9, ("NO", "YES"), 2)


def _scored(labels, predicted, confidences):
    return [Scored(p, c, c, 1.0) for p, c in zip(predicted, confidences, strict=True)]


def test_measure_balanced_accuracy_and_confident_answers():
    labels = ["NO", "NO", "NO", "YES"]
    preds = _scored(labels, ["NO", "NO", "NO", "NO"], [0.95, 0.95, 0.5, 0.97])
    m = measure(labels, preds, ("NO", "YES"), 0.9)
    assert m.accuracy == 0.75 and m.balanced_accuracy == 0.5  # the rare class is never found
    assert m.confident_coverage == 0.75 and m.confident_accuracy == pytest.approx(2 / 3)
    assert m.support == {"NO": 3, "YES": 1}


def _metrics(correct_no, correct_yes, n=10, confidence=0.95):
    labels = ["NO"] * n + ["YES"] * n
    predicted = ["NO" if i < correct_no else "YES" for i in range(n)] + [
        "YES" if i < correct_yes else "NO" for i in range(n)
    ]
    return measure(labels, _scored(labels, predicted, [confidence] * 2 * n), ("NO", "YES"), 0.9)


def test_promotion_policy():
    assert decide("auto", _metrics(9, 9), None).activate
    assert not decide("manual", _metrics(9, 9), None).activate
    worse = decide("auto", _metrics(6, 6), _metrics(9, 9), active_version=3)
    assert not worse.activate and worse.reason.startswith("worse than the active version") and "v3" in worse.reason
    assert decide("auto", _metrics(10, 10), _metrics(8, 9)).reason.startswith("better")
    # one image of difference on 10 per class is within the noise band: not worse
    assert decide("auto", _metrics(9, 8), _metrics(9, 9)).activate
    assert not decide("auto", _metrics(9, 7), _metrics(9, 9)).activate
    fewer_confident = decide("auto", _metrics(9, 9, confidence=0.6), _metrics(9, 9))
    assert not fewer_confident.activate and "fewer images confidently" in fewer_confident.reason
    # the threshold gate: better than the active version, but sure and wrong too often
    short = decide("auto", _metrics(9, 9), _metrics(5, 5), own=_metrics(8, 8))
    assert not short.activate and short.reason.startswith("its confident out-of-fold answers fall short")
    assert not decide("auto", _metrics(9, 9), None, own=_metrics(8, 8)).activate
    assert decide("auto", _metrics(9, 9), None, own=_metrics(9, 9)).activate  # 0.9 >= T = 0.9
    assert decide("auto", _metrics(5, 5), None, own=_metrics(5, 5, confidence=0.6)).activate  # answers nothing
    manual = decide("manual", _metrics(10, 10), _metrics(5, 5))
    assert not manual.activate and manual.reason.startswith("promotion policy is manual (new version better")


def test_eta_from_progress_rate(fake_cloud_class):
    import threading

    from intellioptics_worker.progress import ProgressReporter

    now = [100.0]
    reporter = ProgressReporter(
        fake_cloud_class().client(), "tj_x", heartbeat_s=60, stop_requested=threading.Event(), clock=lambda: now[0]
    )
    assert reporter.eta_s() is None  # nothing done yet: no estimate rather than a wild one
    now[0] = 130.0
    reporter.update(0.25)
    assert reporter.eta_s() == pytest.approx(90.0)
    reporter.update(0.1)  # progress never goes backwards
    assert reporter.eta_s() == pytest.approx(90.0)
