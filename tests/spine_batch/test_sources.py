"""Which files a folder or a manifest yields, in which order, with which view."""

from __future__ import annotations

from pathlib import Path

import pytest
from spine_batch_testlib import CORRUPT_FILM, GOOD_FILMS

from spine_batch.sources import Item, SourceError, source_items


def test_folder_yields_the_films_sorted_depth_first_and_nothing_else(films: Path) -> None:
    keys = [item.key for item in source_items(films)]
    # Each folder's files before its sub-folders, names sorted; no .txt, nothing hidden; the extension-less DICOM kept.
    assert keys == ["a.png", "b.jpg", "c.tif", CORRUPT_FILM, "series/d.png", "series/lat.dcm", "series/noext"]
    assert sorted(keys) == sorted([*GOOD_FILMS, CORRUPT_FILM])
    assert all(item.view is None and Path(item.path) == films / item.key for item in source_items(films))


def test_manifest_rows_carry_view_and_study_relative_to_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text("Path,View,Study\nx/a.png,ap,s1\nb.dcm,,s1\n\nc.png,LAT,\n", encoding="utf-8")
    assert list(source_items(manifest)) == [
        Item(key="x/a.png", path=str(tmp_path / "x/a.png"), view="ap", study="s1"),
        Item(key="b.dcm", path=str(tmp_path / "b.dcm"), view=None, study="s1"),
        Item(key="c.png", path=str(tmp_path / "c.png"), view="LAT", study=None),
    ]


def test_unusable_sources_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        source_items(tmp_path / "missing")
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,view\na.png,AP\n")
    with pytest.raises(SourceError, match="path"):
        list(source_items(manifest))
