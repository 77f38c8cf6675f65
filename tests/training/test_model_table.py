"""The README's model table is printed from the manifest: one row per model, refinement models marked."""

from __future__ import annotations

from pathlib import Path

from spine_core.manifest import Manifest, ModelEntry, save_manifest
from training.model_table import model_table


def _entry(name: str, **kw: object) -> ModelEntry:
    base: dict[str, object] = {
        "name": name,
        "kind": "segmentation",
        "structure": "Ap_Vertebra",
        "view": "AP",
        "file": f"{name}/1/model.onnx",
        "sha256": "0" * 64,
        "input_name": "image",
        "output_name": "mask",
        "input_shape": [None, 512, 256, 1],
        "output_shape": [None, 512, 256, 1],
        "preprocessing": {},
        "architecture": "U-Net",
        "parameters": 1_945_233,
        "opset": 17,
        "training_data": "AASCE; windows",
        "split": "val 90",
        "epochs": 3,
        "metrics": {"val_dice_mean": 0.85},
        "parity_max_abs_diff": 1e-6,
        "validated": True,
    }
    base.update(kw)
    return ModelEntry.model_validate(base)


def test_one_row_per_model_and_the_second_stage_says_what_it_refines(tmp_path: Path) -> None:
    entries = [
        _entry("Ap_Vertebra"),
        _entry("Ap_Vertebra_refine", kind="refinement", refines="Ap_Vertebra", combine="mean", input_shape=[None, 1024, 256, 1]),
        _entry("Lat_Vertebra", structure="Lat_Vertebra", view="LAT", validated=False),
    ]
    save_manifest(Manifest(created="2026-01-01T00:00:00Z", models=entries), tmp_path)
    rows = model_table(tmp_path).splitlines()
    assert len(rows) == 2 + 3
    refine = next(r for r in rows if r.startswith("| `Ap_Vertebra_refine`"))
    assert "second stage of `Ap_Vertebra` (combine: mean)" in refine and "| 1024×256 |" in refine
    assert "val_dice_mean 0.850" in refine and "| AASCE |" in refine
    lat = next(r for r in rows if r.startswith("| `Lat_Vertebra`"))
    assert "**no — demonstration**" in lat and "second stage" not in lat
