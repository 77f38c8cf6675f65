from __future__ import annotations

from fastapi.testclient import TestClient

from spine_core.structures import CLASSIFIER_MODEL_NAME, STRUCTURES


def test_models_lists_the_manifest_as_served(client: TestClient) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["execution_provider"] == "CPUExecutionProvider"
    assert body["manifest_created"] == "2026-01-01T00:00:00Z"
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == set(STRUCTURES) | {CLASSIFIER_MODEL_NAME}
    unet = models["Ap_Vertebra"]
    assert (unet["structure"], unet["view"], unet["version"], unet["kind"]) == ("Ap_Vertebra", "AP", "1", "segmentation")
    assert unet["input_shape"] == [None, 64, 32, 1] and len(unet["sha256"]) == 64
    assert unet["provider"] == "CPUExecutionProvider" and unet["ready"] is True and unet["problem"] is None
    assert unet["training_data"] and unet["validated"] is True and "val_dice" in unet["metrics"]
    clf = models[CLASSIFIER_MODEL_NAME]
    assert clf["kind"] == "classification" and clf["classes"] == ["Normal", "Damaged"] and clf["input_shape"] == [None, 16, 8, 1]
