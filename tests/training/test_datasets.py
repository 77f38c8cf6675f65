"""Dataset readers (both layouts), rasterisation, the patient-grouped split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from spine_core.structures import STRUCTURES
from training.datasets import (
    DatasetError,
    patient_key,
    rasterize_vertebrae,
    read_aasce_dataset,
    read_course_dataset,
    split_by_patient,
    top_to_bottom,
    write_synthetic_aasce_dataset,
    write_synthetic_course_dataset,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.parametrize("with_study_level", [True, False])
def test_course_reader_both_layouts(tmp_path, with_study_level):
    root = write_synthetic_course_dataset(tmp_path / "ds", with_study_level=with_study_level)
    samples = read_course_dataset(root)
    n_studies = 2 if with_study_level else 1
    assert len(samples) == 2 * n_studies * 2  # classes x studies x views
    assert {s.label for s in samples} == {"Normal", "Damaged"}
    for s in samples:
        assert s.image_path.stem == s.view
        assert set(s.mask_paths) == {k for k, v in STRUCTURES.items() if v == s.view}
        mask = s.mask(next(iter(s.mask_paths)))
        assert mask.dtype == bool and mask.shape == s.image().shape[:2] and mask.any()


def test_course_reader_skips_missing_mask_with_warning(tmp_path, caplog):
    root = write_synthetic_course_dataset(tmp_path / "ds")
    (root / "Normal" / "study0" / "LAT" / "Lat_Disk_Height.png").unlink()
    with caplog.at_level(logging.WARNING):
        samples = read_course_dataset(root)
    lat = next(s for s in samples if s.study == "Normal/study0" and s.view == "LAT")
    assert "Lat_Disk_Height" not in lat.mask_paths and len(lat.mask_paths) == 4
    assert any("Normal/study0" in r.message and "Lat_Disk_Height" in r.message for r in caplog.records)


def test_course_reader_rejects_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(DatasetError, match="not a course-layout dataset"):
        read_course_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        read_course_dataset(tmp_path / "missing")


def test_aasce_reader_and_mask(tmp_path):
    root = write_synthetic_aasce_dataset(tmp_path / "aasce", n_patients=3)
    samples = read_aasce_dataset(root)
    assert len(samples) == 4  # patients 0 and 2 have one image, patient 1 two
    s = samples[0]
    assert s.landmarks.shape == (68, 2) and s.cobb_angles.shape == (3,)
    image = s.image()
    mask = s.vertebra_mask(*image.shape[:2])
    assert mask.shape == image.shape[:2] and mask.any()
    assert s.max_cobb == pytest.approx(max(s.cobb_angles))


def test_a_row_listing_t1_last_is_read_top_to_bottom(tmp_path):
    root = write_synthetic_aasce_dataset(tmp_path / "aasce", n_patients=1)
    labels = root / "labels" / "landmarks.csv"
    rows = np.loadtxt(labels, delimiter=",", ndmin=2)
    in_order = read_aasce_dataset(root)[0].landmarks
    # As 23 AASCE rows do: T1's four corners written after L5's (the CSV holds 68 x values, then 68 y values).
    moved = np.concatenate([np.roll(rows[0, :68], -4), np.roll(rows[0, 68:], -4)])
    np.savetxt(labels, np.vstack([moved, rows[1:]]), delimiter=",", fmt="%.6f")
    read = read_aasce_dataset(root)[0].landmarks
    np.testing.assert_allclose(read, in_order, atol=1e-6)
    assert np.all(np.diff(read.reshape(17, 4, 2)[:, :, 1].mean(axis=1)) > 0)
    # A film already in order is untouched, and vertebrae at one height keep their listed order.
    np.testing.assert_array_equal(top_to_bottom(in_order), in_order)
    level = np.zeros((68, 2))
    level[:, 0] = np.arange(68)
    np.testing.assert_array_equal(top_to_bottom(level), level)


def test_aasce_reader_rejects_other_layouts(tmp_path):
    with pytest.raises(DatasetError, match="not an AASCE-layout dataset"):
        read_aasce_dataset(tmp_path)


def test_rasterisation_matches_a_hand_computed_quadrilateral():
    # One vertebra: corners TL(2,2) TR(7,2) BL(2,5) BR(7,5) in a 10x10 image -> pixels x 2..7, y 2..5.
    width = height = 10
    corners = np.array([[2, 2], [7, 2], [2, 5], [7, 5]], dtype=float) / [width, height]
    landmarks = np.concatenate([corners, np.zeros((64, 2))])  # the 16 other vertebrae are degenerate
    mask = rasterize_vertebrae(landmarks, height, width)
    expected = np.zeros((10, 10), bool)
    expected[2:6, 2:8] = True
    expected[0, 0] = mask[0, 0]  # degenerate quads at the origin may light one pixel
    assert np.array_equal(mask, expected)
    assert mask[2:6, 2:8].sum() == 24


def test_rasterisation_orders_corners_tl_tr_br_bl():
    # Listed TL, TR, BL, BR: drawing in that order would make a bow-tie; the reader must not.
    w, h = 20, 20
    corners = np.array([[4, 4], [15, 4], [4, 12], [15, 12]], dtype=float) / [w, h]
    landmarks = np.concatenate([corners, np.tile([[0.9, 0.9]], (64, 1))])
    mask = rasterize_vertebrae(landmarks, h, w)
    assert mask[8, 9]  # the centre of the box is filled (a bow-tie would leave it thin)
    assert mask[4:13, 4:16].mean() > 0.95


def test_patient_key_from_aasce_names():
    assert patient_key("sunhl-1th-02-Jan-2017-162 A AP.jpg") == "162"
    assert patient_key("sunhl-1th-02-Jan-2017-162 B AP.jpg") == "162"
    assert patient_key("sunhl-1th-03-Jan-2017-163 A AP.jpg") == "163"


def test_patient_split_has_no_leakage_and_is_seeded():
    keys = [str(i // 2) for i in range(40)] + ["x"] * 5
    train, val = split_by_patient(keys, 0.25, seed=3)
    assert sorted(train + val) == list(range(len(keys)))
    assert not {keys[i] for i in train} & {keys[i] for i in val}
    assert split_by_patient(keys, 0.25, seed=3) == (train, val)
    assert split_by_patient(keys, 0.25, seed=4) != (train, val)


@pytest.mark.skipif(
    not (SHARED / "aasce-train").is_dir(), reason="../shared/data/aasce-train is absent (only on development machines)"
)
def test_real_aasce_reader_and_split():
    samples = read_aasce_dataset(SHARED / "aasce-train")
    assert len(samples) == 481
    train, val = split_by_patient([s.patient_key for s in samples], 0.2, 0)
    assert not {samples[i].patient_key for i in train} & {samples[i].patient_key for i in val}
    assert sum(s.max_cobb >= 40 for s in samples) == 201
    centres_y = np.stack([s.landmarks.reshape(17, 4, 2)[:, :, 1].mean(axis=1) for s in samples])
    assert np.all(np.diff(centres_y, axis=1) > 0)  # 24 rows list a vertebra out of order: read top to bottom


@pytest.mark.skipif(
    not (SHARED / "course-samples").is_dir(), reason="../shared/data/course-samples is absent (only on development machines)"
)
def test_real_course_samples():
    samples = read_course_dataset(SHARED / "course-samples")
    assert len(samples) == 4
    assert sum(len(s.mask_paths) for s in samples) == 16
