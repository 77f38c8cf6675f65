from __future__ import annotations

import numpy as np
import pytest

from training.metrics import accuracy, dice, roc_auc, sensitivity, specificity


def test_dice_hand_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b[1:3] = True  # 8 px, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_auc_hand_values_and_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # pos {0.4, 0.8}, neg {0.3, 0.6}: pairs won 0.4>0.3, 0.8>0.3, 0.8>0.6 -> 3/4
    assert roc_auc([1, 0, 1, 0], [0.4, 0.3, 0.8, 0.6]) == pytest.approx(0.75)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_accuracy():
    assert accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)


def test_sensitivity_and_specificity():
    labels = [1, 1, 1, 0, 0]
    predictions = [1, 1, 0, 1, 0]
    assert sensitivity(labels, predictions) == pytest.approx(2 / 3)
    assert specificity(labels, predictions) == pytest.approx(1 / 2)
    assert np.isnan(sensitivity([0, 0], [1, 0])) and np.isnan(specificity([1, 1], [1, 0]))
