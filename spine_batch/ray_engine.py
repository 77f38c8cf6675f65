"""`--engine ray`: Ray Data over the file list, an actor pool of model holders, rows streamed back.

The pending file list is written as small Parquet files (bounded memory, however long the list) that Ray
Data reads; `map_batches` sends batches of items to a fixed pool of actors, each holding one
ModelRegistry (one ONNX Runtime session set, loaded once, on a GPU when the actor has one) and calling the
same `classify_item` as the local engine. Each actor returns its rows as JSON text (one column, so blocks
never disagree on a schema), and the driver writes them into the results store as they arrive: the
progress bar, resuming and the Parquet layout are the same as the local engine's.

On a cluster, SOURCE, RESULTS and the models folder must be paths every node sees (a shared mount), and
every node needs this package installed (the container image of docs/batch.md).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.core.config import Settings
from spine_batch.rows import RowOptions, classify_item
from spine_batch.sources import Item

LIST_FILE_ROWS = 512  # items per list file: the unit Ray Data reads and spreads


class ModelHolder:
    """A Ray actor's state: one registry for the actor's life; called with a batch of items, returns rows."""

    def __init__(self, settings: Settings, options: RowOptions, cpus: int) -> None:
        # The registry's inference threads: the CPUs Ray gave this actor, not every core of the node.
        os.environ.setdefault("SPINE_INFERENCE_SLOTS", str(max(1, cpus)))
        from spine_batch.registry import load_registry

        self.registry = load_registry(settings.model_copy(update={"intra_op_threads": 1}))
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for key, path, view, study in zip(batch["key"], batch["path"], batch["view"], batch["study"], strict=True):
            item = Item(key=str(key), path=str(path), view=view or None, study=study or None)
            rows.append(json.dumps(classify_item(self.registry, item, self.options)))
        return {"row": np.array(rows, dtype=object)}


def write_item_lists(items: Iterable[Item], folder: Path) -> int:
    """The items as Parquet files of LIST_FILE_ROWS rows each; returns how many items."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("key", pa.string()), ("path", pa.string()), ("view", pa.string()), ("study", pa.string())])
    count, chunk = 0, []
    for item in items:
        chunk.append(item.as_dict())
        if len(chunk) == LIST_FILE_ROWS:
            pq.write_table(pa.Table.from_pylist(chunk, schema=schema), folder / f"list-{count // LIST_FILE_ROWS:06d}.parquet")
            count += len(chunk)
            chunk = []
    if chunk:
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), folder / f"list-{count // LIST_FILE_ROWS:06d}.parquet")
        count += len(chunk)
    return count


def _cuda_usable(settings: Settings) -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in settings.providers and "CUDAExecutionProvider" in ort.get_available_providers()


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at `address` (auto, ray://host:10001), or start Ray on this machine; reuse a started one."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def run_ray(
    settings: Settings,
    items: Iterable[Item],
    options: RowOptions,
    work_dir: Path,
    on_row: Callable[[dict[str, Any]], None],
    on_total: Callable[[int], None],
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    gpus_per_actor: float | None = None,
    batch_size: int = 4,
) -> None:
    import ray
    import ray.data

    list_dir = work_dir / "_pending"
    shutil.rmtree(list_dir, ignore_errors=True)
    total = write_item_lists(items, list_dir)
    on_total(total)
    if total == 0:
        shutil.rmtree(list_dir, ignore_errors=True)
        return
    connect(address, None)
    resources = ray.cluster_resources()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 and _cuda_usable(settings) else 0.0
    if actors is None:
        by_cpu = int(resources.get("CPU", 1) // cpus_per_actor)
        by_gpu = int(resources.get("GPU", 0) // gpus_per_actor) if gpus_per_actor else by_cpu
        actors = max(1, min(by_cpu, by_gpu))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts rows written
    dataset = ray.data.read_parquet(str(list_dir)).map_batches(
        ModelHolder,
        fn_constructor_kwargs={"settings": settings, "options": options, "cpus": cpus_per_actor},
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="default"):
        for text in batch["row"]:
            on_row(json.loads(text))
    shutil.rmtree(list_dir, ignore_errors=True)
