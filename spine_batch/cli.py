"""spine-batch SOURCE --out RESULTS: every radiograph of an archive through /classify's code, into a table."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from spine_batch.dicomweb import dicomweb_items, read_study_uids
from spine_batch.results import ResultsStore, export_csv
from spine_batch.rows import STATUS_ERROR, VIEW_FROM_OPTION_FOR_DICOM, RowOptions
from spine_batch.sources import Item, SourceError, source_items
from spine_engine.aggregation import RULES
from spine_engine.pacs import DicomwebServer
from spine_engine.settings import EngineSettings

EXAMPLES = """
examples:
  spine-batch ../shared/data/aasce-train --out results.parquet
  spine-batch manifest.csv --out results.parquet --csv results.csv        # rows: path,view[,study]
  spine-batch /archive --out /archive-results.parquet --engine ray --ray-address auto
  spine-batch http://pacs:8042/dicom-web --studies @study-uids.txt --out results.parquet
      (SPINE_DICOMWEB_USERNAME / SPINE_DICOMWEB_PASSWORD: basic auth, as the service reads them)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spine-batch",
        description="Classify every spine radiograph of a folder or manifest with the service's models; one row per image.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", help="a folder (recursive: JPEG, PNG, TIFF, DICOM), a CSV manifest path,view[,study], or a DICOMweb URL"
    )
    p.add_argument("--studies", help="DICOMweb: study UIDs, comma-separated, or @FILE with one a line")
    p.add_argument("--out", type=Path, required=True, help="results folder of Parquet parts (created; re-running resumes)")
    p.add_argument("--csv", type=Path, help="also write the whole results table to this CSV at the end")
    p.add_argument("--view", default="AP", help="AP (default) or LAT for files whose manifest row and DICOM header give none")
    p.add_argument("--masks-dir", type=Path, help="write each image's masks as PNGs to <dir>/<path>/<structure>.png")
    p.add_argument("--no-masks", action="store_true", help="skip the masks at the original size (faster; no area/bbox columns)")
    p.add_argument("--aggregation", choices=list(RULES), help="default: SPINE_AGGREGATION, as the service")
    p.add_argument("--models-dir", type=Path, help="default: SPINE_MODELS_DIR or the committed exported_models/")
    p.add_argument("--providers", help="onnxruntime providers, comma-separated (default: SPINE_PROVIDERS, CUDA then CPU)")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, help="local: images in flight (default: cores + 1)")
    p.add_argument("--ray-address", help="ray: auto (this node's cluster) or ray://head:10001; default: start Ray here")
    p.add_argument(
        "--actors",
        type=int,
        help="ray: model-holder actors (default: what the CPUs / --cpus-per-actor, or GPUs, hold; on several nodes, "
        "less the largest node's share, so a lost node's actor can restart)",
    )
    p.add_argument("--cpus-per-actor", type=int, default=1)
    p.add_argument("--gpus-per-actor", type=float, help="ray: default 1 when the cluster has GPUs and CUDA is usable, else 0")
    p.add_argument("--retry-errors", action="store_true", help="drop the error rows of RESULTS first, so those images run again")
    p.add_argument("--chunk-rows", type=int, default=256, help="rows per Parquet part (a part is also written every 30 s)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stats-json", type=Path, help="write the run's counts and timings here (benchmarks/batch_bench.py reads it)")
    return p


def _settings(args: argparse.Namespace) -> EngineSettings:
    overrides: dict[str, Any] = {"log_level": "warning"}
    if args.models_dir:
        overrides["models_dir"] = args.models_dir
    if args.providers:
        overrides["providers"] = args.providers
    return EngineSettings(**overrides)  # the one reader of SPINE_* (the service reads the same fields)


def _source(args: argparse.Namespace, settings: EngineSettings) -> tuple[Callable[[], Iterator[Item]], DicomwebServer | None]:
    """A function that streams the items (called once to run, once more to count), and the DICOMweb server if any."""
    if args.source.startswith(("http://", "https://")):
        if not args.studies:
            raise SourceError("a DICOMweb source needs --studies (UIDs, or @FILE)")
        server = DicomwebServer.from_settings(settings, url=args.source)
        uids = read_study_uids(args.studies)
        return (lambda: dicomweb_items(server, uids)), server
    source = Path(args.source)
    next(iter(source_items(source)), None)  # fail now on a missing folder or a bad manifest
    return (lambda: source_items(source)), None


def _count_in_background(items: Callable[[], Iterator[Item]], done: set[str], bar: tqdm) -> None:
    """The images still to do, counted on a second walk, so the bar gets its ETA without holding the list."""

    def count() -> None:
        try:
            bar.total = sum(1 for item in items() if item.key not in done)
            bar.refresh()
        except Exception:  # the main walk reports source errors; the bar just stays without a total
            pass

    threading.Thread(target=count, name="count-images", daemon=True).start()


class RowClock:
    """When rows arrive. The first burst (rows within 50 ms of the first: a Ray block, or each local worker's
    first image) closes the start-up (model loading, Ray's start); the steady rate is the rows after it over
    the time from it to the last row."""

    BURST_S = 0.05

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last = 0.0
        self.burst_rows = 0

    def tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if now - self.first <= self.BURST_S:
            self.burst_rows += 1
        self.last = now

    def stats(self, images: int, errors: int) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        first = (self.first or self.started) - self.started
        span = self.last - self.first if self.first is not None else 0.0
        return {
            "images": images,
            "errors": errors,
            "seconds": round(seconds, 3),
            "first_row_s": round(first, 3),
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "steady_images_per_s": (images - self.burst_rows) / span if span > 0 else 0.0,
        }


def _quiet_ray() -> None:
    """Ray's Python warnings and loggers in this process (its scheduling advice on a small pool, its deprecations)
    are not for a terminal that shows a progress bar; its workers' output is not forwarded (log_to_driver=False)."""
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    for name in ("ray", "ray.data", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = _settings(args)
    try:
        items, server = _source(args, settings)
        store = ResultsStore(args.out, chunk_rows=args.chunk_rows)
        if args.retry_errors:
            print(f"retrying {store.drop_errors()} images whose rows were errors", file=sys.stderr)
        done = store.done_keys()
    except (SourceError, ValueError, OSError) as exc:
        print(f"spine-batch: {exc}", file=sys.stderr)
        return 2
    options = RowOptions(
        policy=replace(settings.policy(), aggregation=args.aggregation or settings.aggregation),
        max_pixels=settings.max_image_pixels,
        include_masks=not args.no_masks,
        masks_dir=str(args.masks_dir) if args.masks_dir else None,
        default_view=args.view,
        dicomweb=server,
    )
    source_order: list[str] = []  # every key in the source's order, done or not: the final table's order

    def walk() -> Iterator[Item]:
        for item in items():
            source_order.append(item.key)
            yield item

    pending = (item for item in walk() if item.key not in done)
    try:
        first = next(pending, None)  # walks past what is done; nothing is loaded until there is an image to do
    except (SourceError, OSError) as exc:
        print(f"spine-batch: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a PACS that fails while its study list is read
        print(f"spine-batch: {exc}", file=sys.stderr)
        return 1
    if first is None:
        store.put_in_order(source_order)
        store.close()
        found = f"all {len(done)} images of {args.source} are already in {args.out}" if done else f"no image in {args.source}"
        print(f"spine-batch: nothing to do: {found}", file=sys.stderr)
        return _export_csv(args) if args.csv else 0
    pending = itertools.chain([first], pending)
    if done:
        print(f"resuming: {len(done)} images already in {args.out}", file=sys.stderr)

    errors = 0
    dicoms_without_view = 0
    clock = RowClock()
    bar = tqdm(unit="img", desc="classify", disable=args.no_progress, smoothing=0.05, dynamic_ncols=True)

    def on_row(row: dict[str, Any]) -> None:
        nonlocal errors, dicoms_without_view
        store.add(row)
        clock.tick()
        errors += row.get("status") == STATUS_ERROR
        dicoms_without_view += row.get("view_from") == VIEW_FROM_OPTION_FOR_DICOM
        bar.update(1)
        if errors:
            bar.set_postfix(errors=errors, refresh=False)

    def on_total(total: int) -> None:
        bar.total = total
        bar.refresh()

    finished = False
    try:
        with logging_redirect_tqdm():  # log lines (a model's warning, a PACS retry) above the bar, not through it
            if args.engine == "local":
                from spine_batch.local_engine import default_workers, run_local
                from spine_engine.engine import load_engine

                engine = load_engine(settings)
                if server is None:  # a second QIDO-RS pass over a PACS only for a progress total: no
                    _count_in_background(items, done, bar)
                workers = args.workers or default_workers(engine.registry.tuning.inference_slots or 1)
                run_local(engine, pending, options, workers, on_row)
            else:
                _quiet_ray()
                from spine_batch.ray_engine import run_ray

                run_ray(
                    settings,
                    pending,
                    options,
                    on_row,
                    on_total,
                    address=args.ray_address,
                    actors=args.actors,
                    cpus_per_actor=args.cpus_per_actor,
                    gpus_per_actor=args.gpus_per_actor,
                )
        finished = True
    except KeyboardInterrupt:
        print("\ninterrupted: the rows finished so far are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"spine-batch: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        if finished:
            store.put_in_order(source_order)  # the walk is complete: rows in the source's order, not completion order
        store.close()
    stats = clock.stats(store.written, errors)
    print(
        f"{store.written} images in {stats['seconds']:.1f} s ({stats['images_per_s']:.2f}/s; "
        f"{stats['steady_images_per_s']:.2f}/s after the first row at {stats['first_row_s']:.1f} s), "
        f"{errors} errors; results in {args.out}",
        file=sys.stderr,
    )
    if dicoms_without_view:
        print(
            f"spine-batch: {dicoms_without_view} DICOM files name no view (no ViewPosition) and were analysed as "
            f"{args.view} (--view; their rows say view_from={VIEW_FROM_OPTION_FOR_DICOM!r}); give a manifest with a "
            "view column for a mixed archive",
            file=sys.stderr,
        )
    if args.stats_json:
        args.stats_json.write_text(json.dumps({**stats, "engine": args.engine}, indent=1))
    return _export_csv(args) if args.csv else 0


def _export_csv(args: argparse.Namespace) -> int:
    rows = export_csv(args.out, args.csv)
    print(f"{rows} rows written to {args.csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
