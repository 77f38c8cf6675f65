"""A Ray actor's engine gets the actor's CPUs as its inference slots through the settings object (never the
environment, which the driver's settings were already built from)."""

from __future__ import annotations

from pathlib import Path

import pytest
from spine_service_testlib import CPU

from spine_batch.rows import RowOptions
from spine_engine.settings import EngineSettings


def test_with_slots_sets_the_slots_and_one_thread_each() -> None:
    driver = EngineSettings(_env_file=None, inference_slots=8)  # type: ignore[call-arg]
    actor = driver.with_slots(3)
    assert (actor.inference_slots, actor.intra_op_threads, actor.tuning().inference_slots) == (3, 1, 3)
    assert driver.inference_slots == 8  # the driver's object is unchanged


def test_the_model_holder_runs_as_many_slots_as_its_cpus(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")
    from spine_batch.ray_engine import ModelHolder

    monkeypatch.setenv("SPINE_INFERENCE_SLOTS", "7")  # what the driver's environment says: not the actor's count
    settings = EngineSettings(_env_file=None, models_dir=models_dir, providers=CPU, warmup=False)  # type: ignore[call-arg]
    assert settings.inference_slots == 7
    holder = ModelHolder(settings, RowOptions(default_view="AP"), cpus=2)
    assert holder.engine.registry.scheduler.slots == 2 and holder.engine.registry.tuning.inference_slots == 2


@pytest.mark.parametrize(
    "nodes, cpus, gpus, expected",
    [
        ([{"CPU": 2.0}], 1, 0.0, 2),  # one machine: every CPU
        ([{"CPU": 0.0}, {"CPU": 2.0}, {"CPU": 2.0}], 1, 0.0, 2),  # a CPU-less head, two workers: one node kept free
        ([{"CPU": 8.0}, {"CPU": 4.0}, {"CPU": 4.0}], 2, 0.0, 4),  # the largest node's share is kept free
        ([{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}], 1, 1.0, 2),  # GPUs bound it: one node's GPUs free
        ([{"CPU": 1.0}, {"CPU": 1.0}], 2, 0.0, 1),  # nothing fits: still one actor
    ],
)
def test_default_actors_leave_room_for_a_lost_node(nodes: list[dict], cpus: int, gpus: float, expected: int) -> None:
    pytest.importorskip("pyarrow")
    from spine_batch.ray_engine import default_actor_count

    assert default_actor_count(nodes, cpus, gpus) == expected
