"""When and on which thread each session run happens: the inference slots and dynamic micro-batching."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from spine_engine.models import LoadedModel

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    """The CPUs this process may use (capped at 8): intra-op threads and inference slots when none are given.

    onnxruntime sizes its pool to every core of the host, which oversubscribes a container limited by
    cpuset; the affinity mask is what this process may actually use.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


@dataclass(frozen=True)
class RuntimeTuning:
    """How inference is scheduled (benchmarks/ and docs/benchmarks.md justify the defaults with measurements).

    `inference_slots`: session runs at once across all models (default: one per CPU this process may
    use, each session with CPUs / slots intra-op threads, i.e. 1): a request's U-Nets run side by side.
    0 = no scheduler: every caller runs its own inputs directly (the behaviour before it).
    `max_batch`: inputs of one model queued by different requests while the slots are busy run as one
    batch of at most this many images (dynamic micro-batching). None = automatic: 8 when the sessions
    run on a GPU, 1 (off) on the CPU, where a U-Net's cost per image does not drop with the batch.
    `ort_spinning`: onnxruntime's intra-op threads busy-wait between parallel sections (only matters
    with more than one intra-op thread; it takes CPU from the request threads).
    The service fills it from its settings (SPINE_INFERENCE_SLOTS, SPINE_INFERENCE_MAX_BATCH, SPINE_ORT_SPINNING).
    """

    inference_slots: int = field(default_factory=default_threads)
    max_batch: int | None = None
    ort_spinning: bool = False

    def intra_op_threads(self) -> int:
        """Intra-op threads per session when none are given: the CPUs shared among the inference slots."""
        return max(1, default_threads() // max(1, self.inference_slots))


class _Job:
    __slots__ = ("done", "error", "group", "inputs", "model", "result")

    def __init__(self, model: LoadedModel, inputs: np.ndarray) -> None:
        self.model, self.inputs = model, inputs
        self.group = 0  # the run_all call that queued it
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class Scheduler:
    """`slots` threads run the queued jobs; queued inputs of one model are batched into one run.

    A caller queues its jobs (one request's U-Nets together, largest first) and waits. A slot takes the
    oldest job, preferring a model that is not running already, plus queued inputs of the same model
    from other callers (never two jobs of one call: those were split to run side by side), up to
    `max_batch` images: at low load a request's models run side by side on the slots; under load,
    inputs wait while the slots are busy and may run in batches.
    With 0 slots every caller runs its own work directly (no threads).
    The threads belong to a ThreadPoolExecutor, which lets them go when the registry is dropped.
    """

    def __init__(self, slots: int, max_batch: int, run: Callable[[LoadedModel, np.ndarray], np.ndarray]) -> None:
        self.slots, self.max_batch, self._run = slots, max_batch, run
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._running: dict[str, int] = {}
        self._calls = 0
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="inference") if slots > 0 else None

    def _take(self) -> list[_Job] | None:
        """Under the lock: the next batch to run, or None when the queue is empty."""
        if not self._queue:
            return None
        first = next((j for j in self._queue if not self._running.get(j.model.name)), self._queue[0])
        batch, images, groups = [first], len(first.inputs), {first.group}
        for job in self._queue:
            if job.model is first.model and job.group not in groups and images + len(job.inputs) <= self.max_batch:
                batch.append(job)
                images += len(job.inputs)
                groups.add(job.group)
        for job in batch:
            self._queue.remove(job)
        self._running[first.model.name] = self._running.get(first.model.name, 0) + 1
        return batch

    def _drain_one(self) -> None:
        with self._cond:
            batch = self._take()
        if batch is None:  # its job went into an earlier batch
            return
        try:
            inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([j.inputs for j in batch])
            out = self._run(batch[0].model, inputs)
            start = 0
            for job in batch:
                job.result = out[start : start + len(job.inputs)]
                start += len(job.inputs)
        except BaseException as exc:  # handed to every caller of the batch
            for job in batch:
                job.error = exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._running[batch[0].model.name] -= 1
                self._cond.notify_all()

    def run_all(self, work: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        """Run each (model, batch), queued with other callers' inputs; the outputs in order (raises a job's error)."""
        if self._pool is None:
            return [self._run(model, batch) for model, batch in work]
        jobs = [_Job(model, batch) for model, batch in work]
        with self._cond:
            self._calls += 1
            for job in jobs:
                job.group = self._calls
            self._queue.extend(jobs)
        for _ in jobs:  # one drain per job: every job is taken by some drain, alone or in a batch
            self._pool.submit(self._drain_one)
        with self._cond:
            while not all(j.done for j in jobs):
                self._cond.wait()
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs]  # type: ignore[misc]

    def call(self, fn: Callable[[], R]) -> R:
        """`fn()` on a slot's thread (a session run with inputs of its own, e.g. a raw KServe v2 request).

        It waits for a free slot like the queued jobs, so no session runs outside the slots.
        """
        if self._pool is None:
            return fn()
        return self._pool.submit(fn).result()

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """`[fn(x) for x in items]` on the slots' threads (in order; sequential without slots).

        For the CPU work around inference (decoding, preprocessing, resizing, encoding): one request's
        pieces use every core, and under load all of it queues on the same threads instead of piling up
        more runnable threads than cores. `fn` must not wait for other work on these threads.
        """
        if self._pool is None or len(items) <= 1:
            return [fn(x) for x in items]
        futures: list[Any] = [self._pool.submit(fn, x) for x in items]
        return [f.result() for f in futures]
