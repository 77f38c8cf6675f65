"""spine_core.calibration: the maps serving applies and the calibration error it is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core import calibration as cal


def test_logit_of_saturated_probabilities_is_finite_and_clipped():
    z = cal.logit(np.array([0.0, 1.0, 0.5]))
    assert np.all(np.isfinite(z))
    assert z[0] == pytest.approx(np.log(cal.EPS / (1 - cal.EPS)))
    assert z[1] == pytest.approx(-z[0])
    assert z[2] == 0.0


def test_sigmoid_inverts_logit_and_does_not_overflow():
    p = np.array([1e-6, 0.2, 0.5, 0.9, 1 - 1e-6])
    np.testing.assert_allclose(cal.sigmoid(cal.logit(p)), p, rtol=1e-9)
    with np.errstate(over="raise"):
        np.testing.assert_allclose(cal.sigmoid(np.array([-1000.0, 1000.0])), [0.0, 1.0])


def test_temperature_one_is_the_identity_and_higher_temperatures_soften():
    p = np.array([0.01, 0.3, 0.7, 0.999])
    np.testing.assert_allclose(cal.apply_temperature(p, 1.0), p, rtol=1e-9)
    softened = cal.apply_temperature(p, 3.0)
    assert np.all(np.abs(softened - 0.5) < np.abs(p - 0.5))
    assert np.all(np.diff(softened) > 0)  # monotone: the ranking (and so the AUC) is kept
    with pytest.raises(ValueError):
        cal.apply_temperature(p, 0.0)


def test_platt_with_unit_slope_and_intercept_shifts_the_logit():
    p = np.array([0.2, 0.5, 0.8])
    np.testing.assert_allclose(cal.apply_platt(p, 1.0, 0.0), p, rtol=1e-9)
    np.testing.assert_allclose(cal.logit(cal.apply_platt(p, 1.0, -1.0)), cal.logit(p) - 1.0, rtol=1e-9)


def test_calibrate_p_damaged_reads_a_manifest_mapping():
    p = np.array([0.1, 0.9])
    np.testing.assert_allclose(
        cal.calibrate_p_damaged(p, {"method": "temperature", "temperature": 2.0}), cal.apply_temperature(p, 2.0)
    )
    np.testing.assert_allclose(
        cal.calibrate_p_damaged(p, {"method": "platt", "slope": 0.5, "intercept": -1.0}), cal.apply_platt(p, 0.5, -1.0)
    )
    np.testing.assert_allclose(cal.calibrate_p_damaged(p, None), p)
    with pytest.raises(ValueError, match="unknown calibration method"):
        cal.calibrate_p_damaged(p, {"method": "isotonic"})


def test_ece_of_a_perfectly_calibrated_set_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = rng.uniform(0, 1, p.size) < p  # outcome drawn with exactly the predicted probability
    assert cal.expected_calibration_error(p, y, mode="positive") < 0.01
    assert cal.expected_calibration_error(p, y, mode="top_label") < 0.01


def test_ece_of_an_overconfident_set_is_large_and_temperature_repairs_it():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(0, 2, 100_000)
    y = rng.uniform(0, 1, true_logit.size) < cal.sigmoid(true_logit)
    overconfident = cal.sigmoid(4 * true_logit)  # a temperature of 4 undone
    before = cal.expected_calibration_error(overconfident, y)
    after = cal.expected_calibration_error(cal.apply_temperature(overconfident, 4.0), y)
    assert before > 0.1
    assert after < 0.01
    assert cal.negative_log_likelihood(cal.apply_temperature(overconfident, 4.0), y) < cal.negative_log_likelihood(
        overconfident, y
    )


def test_reliability_bins_are_equal_width_and_count_every_sample():
    p = np.array([0.0, 0.05, 0.5, 0.99, 1.0])
    y = np.array([0, 0, 1, 1, 1])
    bins = cal.reliability_bins(p, y, n_bins=10)
    np.testing.assert_allclose(bins.edges, np.linspace(0, 1, 11))
    assert bins.count.sum() == 5
    assert bins.count[0] == 2 and bins.count[5] == 1 and bins.count[9] == 2  # 1.0 falls in the last bin
    assert np.isnan(bins.observed[3])  # empty bins carry no value
    assert bins.ece == pytest.approx((2 * 0.025 + 1 * 0.5 + 2 * 0.005) / 5)


def test_top_label_is_the_returned_labels_confidence():
    confidence, correct = cal.top_label(np.array([0.9, 0.2, 0.6]), np.array([True, True, False]))
    np.testing.assert_allclose(confidence, [0.9, 0.8, 0.6])
    np.testing.assert_array_equal(correct, [True, False, False])


def test_shape_mismatch_and_unknown_mode_are_errors():
    with pytest.raises(ValueError):
        cal.reliability_bins(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        cal.expected_calibration_error(np.zeros(3), np.zeros(3), mode="other")  # type: ignore[arg-type]


def test_p_damaged_from_angle_is_one_half_at_the_cut_off_and_rises_with_the_angle():
    assert cal.p_damaged_from_angle(40.0, 3.5, 40.0) == 0.5
    # One root-mean-square error above the line: Phi(1); one below: Phi(-1)
    assert cal.p_damaged_from_angle(43.5, 3.5, 40.0) == pytest.approx(0.841345, abs=1e-6)
    assert cal.p_damaged_from_angle(36.5, 3.5, 40.0) == pytest.approx(0.158655, abs=1e-6)
    angles = np.linspace(0.0, 90.0, 31)
    p = np.array([cal.p_damaged_from_angle(a, 3.5, 40.0) for a in angles])
    assert np.all(np.diff(p) >= 0) and np.all(np.diff(p[(angles > 25) & (angles < 55)]) > 0)
    assert p[0] < 1e-6 and p[-1] > 1 - 1e-6
    assert np.array_equal(p >= 0.5, angles >= 40.0)  # the probability and the angle's label never disagree
    # A less precise measurement says less: the same 45 degrees is less surely Damaged
    assert cal.p_damaged_from_angle(45.0, 7.4, 40.0) < cal.p_damaged_from_angle(45.0, 3.5, 40.0)
    with pytest.raises(ValueError, match="rms_error_deg"):
        cal.p_damaged_from_angle(45.0, 0.0, 40.0)
