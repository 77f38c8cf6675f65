"""`--engine local`: one model registry in this process, a thread pool feeding it.

Threads, not processes: decoding (Pillow, pydicom), onnxruntime and most of numpy release the GIL, and the
registry already spreads each image's models over its own inference threads (one per core), so a few
request threads keep every core busy with one copy of the models in memory. On the shared 2-core VM,
1, 2 and 3 workers could not be told apart (docs/benchmarks.md, "Batch analysis").
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from spine_batch.rows import RowOptions, classify_item
from spine_batch.sources import Item
from spine_engine.engine import Engine


def default_workers(cores: int) -> int:
    """Images in flight at once: one per core plus one, so a core never idles while a file is read."""
    return cores + 1


def _classify(engine: Engine, item: Item, options: RowOptions, host: str) -> dict[str, Any]:
    return {**classify_item(engine, item, options), "host": host}


def run_local(
    engine: Engine,
    items: Iterable[Item],
    options: RowOptions,
    workers: int,
    on_row: Callable[[dict[str, Any]], None],
) -> None:
    """Classify every item; at most 2 x `workers` images are read or queued at once (bounded memory)."""
    max_in_flight = 2 * workers
    host = socket.gethostname()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch") as pool:
        in_flight: set[Future[dict[str, Any]]] = set()
        try:
            for item in items:
                if len(in_flight) >= max_in_flight:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        on_row(future.result())
                in_flight.add(pool.submit(_classify, engine, item, options, host))
            for future in in_flight:
                on_row(future.result())
        except BaseException:
            # Interrupted: do not start what is queued; what is running finishes and is lost, the rest was kept.
            for future in in_flight:
                future.cancel()
            raise
