"""`--engine ray`: Ray Data over the file list, an actor pool of model holders, rows streamed back.

The pending file list goes into Ray's object store as small Arrow blocks (the driver keeps references
only); `map_batches` sends batches of items to a fixed pool of actors, each holding one
engine (one ONNX Runtime session set, loaded once, on a GPU when the actor has one) and calling the
same `classify_item` as the local engine. Each actor returns its rows as JSON text (one column, so blocks
never disagree on a schema), and the driver writes them into the results store as they arrive: the
progress bar, resuming and the Parquet layout are the same as the local engine's.

On a cluster, SOURCE, RESULTS and the models folder must be paths every node sees (a shared mount), and
every node needs this package installed (the container image of docs/batch.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from spine_batch.rows import RowOptions, classify_item
from spine_batch.sources import Item
from spine_engine.engine import load_engine
from spine_engine.settings import EngineSettings

# Items per block of the file list. A block goes to one actor whole, so blocks must be small for the pool to
# share the work (a 481-film list in one block would keep one actor busy and the others idle).
LIST_BLOCK_ROWS = 16

# A node lost mid-run (docs/batch.md, "A node lost") is survived with Ray Data's defaults for an actor pool,
# which Ray 2.60 no longer lets map_batches set (ray_remote_args is deprecated): the pool's actors are placed
# SPREAD over the nodes, an actor whose node dies is restarted where there is room (max_restarts=-1) and the
# batches it held run again on it (max_task_retries=-1); a lost output block is rebuilt from its lineage.
# "Where there is room": with every CPU of the cluster in the pool (the default --actors) and no node to replace
# the lost one, Ray Data 2.60 stops dispatching ("Cluster resources are not enough to run any task") and the run
# hangs; --actors one node's worth below the CPUs leaves the room, or ^C and the same command resumes.
# The driver writes a row only when it receives it, so every item is written exactly once.


class ModelHolder:
    """A Ray actor's state: one registry for the actor's life; called with a batch of items, returns rows.

    The batch's images run side by side on as many threads as the actor has CPUs (as the local engine's
    workers do), so `--cpus-per-actor 4` gives a GPU actor four images decoding and post-processing at once.
    """

    def __init__(self, settings: EngineSettings, options: RowOptions, cpus: int) -> None:
        # The engine's inference slots: the CPUs Ray gave this actor, not the driver's count nor every core of the node.
        self.engine = load_engine(settings.with_slots(cpus))
        self.options = options
        self.pool = ThreadPoolExecutor(max_workers=max(1, cpus), thread_name_prefix="actor")
        import ray.util

        self.host = ray.util.get_node_ip_address()  # the `host` column: this node's address as Ray knows it

    def _row(self, item: Item) -> str:
        return json.dumps({**classify_item(self.engine, item, self.options), "host": self.host})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            Item(key=str(key), path=str(path), view=view or None, study=study or None)
            for key, path, view, study in zip(batch["key"], batch["path"], batch["view"], batch["study"], strict=True)
        ]
        return {"row": np.array(list(self.pool.map(self._row, items)), dtype=object)}


def put_item_lists(items: Iterable[Item]) -> tuple[list[Any], int]:
    """The items as Arrow tables of LIST_BLOCK_ROWS rows in Ray's object store (spilled to disk when it
    fills): the driver holds only references, however long the list."""
    import ray

    schema = pa.schema([("key", pa.string()), ("path", pa.string()), ("view", pa.string()), ("study", pa.string())])
    refs, chunk, count = [], [], 0
    for item in items:
        chunk.append(item.as_dict())
        count += 1
        if len(chunk) == LIST_BLOCK_ROWS:
            refs.append(ray.put(pa.Table.from_pylist(chunk, schema=schema)))
            chunk = []
    if chunk:
        refs.append(ray.put(pa.Table.from_pylist(chunk, schema=schema)))
    return refs, count


def _cuda_usable(settings: EngineSettings) -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in settings.providers and "CUDAExecutionProvider" in ort.get_available_providers()


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at `address` (auto, ray://host:10001), or start Ray on this machine; reuse a started one."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its execution plan, timings and advice: not for a terminal


def default_actor_count(nodes: list[dict[str, float]], cpus_per_actor: int, gpus_per_actor: float) -> int:
    """Actors for a run when `--actors` is not given: what the cluster's CPUs (and GPUs) hold, less the largest
    node's share when there are several nodes with CPUs. Ray Data stalls when a lost node's actor cannot be
    restarted for want of room (docs/batch.md), so a fixed cluster keeps one node's worth free; on one machine
    every CPU is used."""

    def fits(resources: dict[str, float]) -> int:
        by_cpu = int(resources.get("CPU", 0) // cpus_per_actor)
        by_gpu = int(resources.get("GPU", 0) // gpus_per_actor) if gpus_per_actor else by_cpu
        return min(by_cpu, by_gpu)

    per_node = [fits(node) for node in nodes if node.get("CPU", 0) > 0]
    if len(per_node) > 1:
        return max(1, sum(per_node) - max(per_node))
    return max(1, sum(per_node))


def run_ray(
    settings: EngineSettings,
    items: Iterable[Item],
    options: RowOptions,
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

    connect(address, None)
    # Not a file Ray reads: its read tasks need a CPU each, which a pool of actors holding every CPU never frees.
    lists, total = put_item_lists(items)
    on_total(total)
    if not lists:
        return
    resources = ray.cluster_resources()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 and _cuda_usable(settings) else 0.0
    if actors is None:
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        actors = default_actor_count(nodes or [resources], cpus_per_actor, gpus_per_actor)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts rows written
    dataset = ray.data.from_arrow_refs(lists).map_batches(
        ModelHolder,
        fn_constructor_kwargs={"settings": settings, "options": options, "cpus": cpus_per_actor},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="default"):
        for text in batch["row"]:
            on_row(json.loads(text))
