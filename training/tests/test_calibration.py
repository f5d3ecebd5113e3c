"""Calibration from out-of-fold predictions: the margin shrinks as labels grow, and the
answers left confident are right at least a share T of the time (95 % lower bound)."""

from __future__ import annotations

import numpy as np
import pytest

from intellioptics_common.intervals import balanced_interval, wilson_interval, wilson_lower
from intellioptics_training.calibration import FLAT_TEMPERATURE, adjusted_confidence, calibrate, softmax
from intellioptics_training.data import stratified_folds


def _oof(n: int, seed: int, wrong: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Binary logits of a useful model: margins spread widely, the wrong answers mostly
    among the narrow margins (as a real model's mistakes are)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    margin = rng.gamma(2.0, 2.0, n)
    flip = rng.random(n) < wrong * np.exp(-margin / 4) * 2
    sign = np.where(labels == 1, 1.0, -1.0) * np.where(flip, -1.0, 1.0)
    logits = np.stack([-sign * margin / 2, sign * margin / 2], axis=1)
    return logits, labels


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(24, 24)
    assert low == pytest.approx(0.862, abs=1e-3) and high == 1.0
    assert wilson_lower(24, 24) < 0.9 < wilson_lower(25, 25)  # one-sided: 25 right of 25 first proves 0.9
    low, high = balanced_interval([(9, 10), (5, 10)])
    assert low < 0.7 < high
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


@pytest.mark.parametrize("threshold", [0.8, 0.9])
def test_margin_shrinks_as_labels_grow_and_the_bound_holds(threshold: float):
    coverage = {}
    pool_logits, pool_labels = _oof(500, seed=7)
    for n in (20, 100, 500):
        logits, labels = pool_logits[:n], pool_labels[:n]  # the same model, more labels
        calibration = calibrate(logits, None, labels, threshold)
        confident = softmax(logits, calibration.temperature).max(axis=1) >= threshold
        correct = logits.argmax(axis=1) == labels
        assert calibration.confident_n == int(confident.sum())
        if confident.any():
            assert wilson_lower(int(correct[confident].sum()), int(confident.sum())) >= threshold
            assert calibration.confident_lower_bound >= threshold
        coverage[n] = confident.mean()
    assert coverage[100] > 0.5 and coverage[500] > 0.5
    if threshold == 0.9:
        assert coverage[20] == 0.0  # 20 right of 20 cannot show 0.9 (lower bound 0.88)


def test_an_image_the_oodd_finds_foreign_is_never_confident():
    logits, labels = _oof(400, seed=3)
    in_domain = np.ones(len(labels))
    in_domain[:50] = 0.0
    calibration = calibrate(logits, in_domain, labels, 0.9)
    confidence = adjusted_confidence(softmax(logits, calibration.temperature), in_domain)
    assert calibration.confident_n > 100 and (confidence[:50] == 0.5).all()


def test_a_model_at_chance_answers_nothing():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (300, 2))  # sure of itself, and right half of the time
    calibration = calibrate(logits, None, rng.integers(0, 2, 300), 0.9)
    assert calibration.confident_n == 0 and calibration.confident_lower_bound is None
    assert "every answer escalates" in calibration.reason
    assert (softmax(logits, calibration.temperature).max(axis=1) < 0.9).all()


def test_stratified_folds_cover_every_image_once():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 12)
    folds = stratified_folds(labels, 5, seed=1)
    assert len(folds) == 3  # capped by the smallest class
    held = np.concatenate([evaluate for _, evaluate in folds])
    assert sorted(held.tolist()) == list(range(len(labels)))
    for train, evaluate in folds:
        assert not set(train) & set(evaluate) and set(labels[train]) == {0, 1, 2}
    assert stratified_folds(np.array([0, 0, 1]), 5) == []  # one image in a class: nothing to cross-fit


def test_answering_nothing_keeps_the_label_and_its_ranking():
    logits = np.array([[0.0, 0.3], [2.0, -1.0], [-60.0, 140.0]], dtype=np.float32)
    flat = softmax(logits, FLAT_TEMPERATURE)
    assert (flat.argmax(axis=1) == logits.argmax(axis=1)).all() and (flat.max(axis=1) < 0.6).all()
    assert flat[0, 1] < flat[2, 1]  # a wider margin still ranks higher (ROC AUC survives)
