"""The README's and /docs' response examples are real responses of the committed models (scripts/api_examples.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spine_service_testlib import load_script

from service.schemas import ClassifyResponse, ModelsResponse, SegmentResponse
from spine_core.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = json.loads((ROOT / "service" / "api_examples.json").read_text())
MANIFEST = {e.name: e for e in load_manifest(ROOT / "exported_models").models}
FILM_DIR = ROOT.parent / "shared" / "data" / "aasce-train" / "images"


def _script():
    return load_script("api_examples")


def test_readme_blocks_are_the_examples_file() -> None:
    script = _script()
    blocks = {m.group("name"): m.group("body") for m in script.BLOCK.finditer((ROOT / "README.md").read_text())}
    assert set(blocks) == {"models", "segment", "classify", "classify_lat_only", "classify_blank"}
    for name, body in blocks.items():
        assert body == script.render(EXAMPLES[name]), f"README block {name} differs: run scripts/api_examples.py"


def test_examples_are_valid_responses_and_what_docs_show() -> None:
    SegmentResponse.model_validate(EXAMPLES["segment"])
    ClassifyResponse.model_validate(EXAMPLES["classify"])
    ModelsResponse.model_validate({**EXAMPLES["models"], "models": []})
    schema = ClassifyResponse.model_json_schema()
    assert schema["examples"] == [EXAMPLES["classify"]]


def test_examples_tell_the_truth_about_each_model() -> None:
    for m in EXAMPLES["models"]["models"]:
        assert m["validated"] == MANIFEST[m["name"]].validated, m["name"]
    for body in (EXAMPLES["segment"], EXAMPLES["classify"]):
        for ref in body["models"]:
            entry = MANIFEST[ref["name"]]
            assert (ref["validated"], ref["sha256"], ref["version"]) == (entry.validated, entry.sha256, entry.version)
    demo = {e.structure for e in MANIFEST.values() if e.kind == "segmentation" and not e.validated}
    classify = EXAMPLES["classify"]
    assert classify["decided_by"] and not set(classify["decided_by"]) & demo
    assert not {m["structure"] for m in EXAMPLES["segment"]["masks"]} & demo
    assert {e["structure"] for e in EXAMPLES["segment"]["excluded"]} == {s for s in demo if s.startswith("Ap_")}
    assert EXAMPLES["classify_lat_only"]["code"] == "no_validated_model" and EXAMPLES["classify_lat_only"]["status"] == 422
    assert EXAMPLES["classify_blank"]["code"] == "no_spine_found" and EXAMPLES["classify_blank"]["status"] == 422
    # The default rule decides by the measured angle; the classifier's rule is reported with its manifest cut-off
    assert classify["aggregation"] == "measured" and classify["threshold"] == 0.5
    assert classify["label"] == ("Damaged" if classify["cobb"]["max_deg"] >= 40.0 else "Normal")
    assert (classify["p_damaged"] >= 0.5) == (classify["label"] == "Damaged")
    mean = classify["rules"]["mean"]
    threshold = MANIFEST["Mask_Classifier"].decision_threshold
    assert mean["cutoff"] == pytest.approx(threshold, abs=1e-6)
    assert mean["label"] == ("Damaged" if mean["p_damaged"] >= threshold else "Normal")


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_fresh_run_gives_the_same_answers() -> None:
    film = FILM_DIR / EXAMPLES["_source"]["film"]
    if not film.is_file():
        pytest.skip(f"{film} is absent (../shared/data is not on this machine)")
    fresh = _script().generate(film, ROOT / "exported_models")
    for name in ("classify", "segment"):
        old, new = EXAMPLES[name], fresh[name]
        for key in ("label", "p_damaged", "decided_by", "excluded", "cobb", "vertebrae", "legend"):
            assert new.get(key) == old.get(key), (name, key)
        assert [m["area_px"] for m in new.get("masks", [])] == [m["area_px"] for m in old.get("masks", [])]
    for name in ("classify_lat_only", "classify_blank"):
        assert fresh[name]["code"] == EXAMPLES[name]["code"]
