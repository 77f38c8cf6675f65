"""python -m benchmarks run [--quick] [--json out.json] ... | report results.json | synthetic DIR [--tiny] | batch ..."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.suite import BASELINE_REF, SECTIONS, Config, run, write_json


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["batch"]:  # spine-batch throughput, its own options (benchmarks/batch_bench.py)
        from benchmarks.batch_bench import main as batch_main

        return batch_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="spine-xray benchmark suite (issue 5)")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the suite: prints markdown tables, writes JSON")
    r.add_argument("--quick", action="store_true", help="a few iterations, concurrency 1 and 2, no before/after server variants")
    r.add_argument("--json", type=Path, help="write the results here")
    r.add_argument("--markdown", type=Path, help="also write the tables here")
    r.add_argument("--models-dir", type=Path, help="default: SPINE_MODELS_DIR or exported_models/")
    r.add_argument("--synthetic", choices=["tiny", "full"], help="benchmark random-weight models built now (tiny: CI stand-ins)")
    r.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    r.add_argument("--models", help="comma-separated model names for the per-model section (default: all)")
    r.add_argument("--runs", type=int, help="timed runs per measurement (default 20, quick 3)")
    r.add_argument("--warmup", type=int)
    r.add_argument("--batches", type=_ints, help="default 1,8")
    r.add_argument("--no-keras", action="store_true", help="onnxruntime only (no TensorFlow needed)")
    r.add_argument("--concurrency", type=_ints, help="default 1,4,16 (quick 1,2)")
    r.add_argument("--requests", type=int, help="requests per concurrency level (default 12/24/48 for 1/4/16)")
    r.add_argument(
        "--baseline-ref",
        default=None,
        help=f"git ref served as the 'before' HTTP variant (default {BASELINE_REF}; 'none' to skip)",
    )
    r.add_argument("--no-isolation", action="store_true", help="skip the one-lever-off HTTP variants")
    r.add_argument("--no-int8", action="store_true", help="skip the SPINE_PRECISION=int8 HTTP server variant")
    r.add_argument("--data-dir", type=Path, help="default ../shared/data (course-samples/<Normal|Damaged>/<AP|LAT>/*.jpg)")
    r.add_argument("--require-gpu", action="store_true", help="exit 2 unless GPU figures were measured on CUDAExecutionProvider")
    rep = sub.add_parser("report", help="print the markdown tables of a results JSON")
    rep.add_argument("json", type=Path)
    syn = sub.add_parser("synthetic", help="write random-weight models with the production architectures")
    syn.add_argument("models_dir", type=Path)
    syn.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks.report import render

    if args.command == "report":
        print(render(json.loads(args.json.read_text())))
        return 0
    if args.command == "synthetic":
        from benchmarks.synthetic import main as synthetic_main

        return synthetic_main([str(args.models_dir), *(["--tiny"] if args.tiny else [])])

    kw = {
        "models_dir": args.models_dir,
        "synthetic": args.synthetic,
        "sections": tuple(s for s in args.sections.split(",") if s),
        "models": tuple(args.models.split(",")) if args.models else None,
        "keras": not args.no_keras,
        "data_dir": args.data_dir,
    }
    unknown = set(kw["sections"]) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    cfg = Config.quick_defaults(**kw) if args.quick else Config(**kw)
    if args.runs:
        cfg.runs = args.runs
    if args.warmup is not None:
        cfg.warmup = args.warmup
    if args.batches:
        cfg.batches = args.batches
    if args.concurrency:
        cfg.concurrencies = args.concurrency
    if args.requests or args.concurrency:
        n = args.requests
        cfg.requests = {c: (n if n else max(4, 3 * c)) for c in cfg.concurrencies}
    if args.baseline_ref is not None:
        cfg.baseline_ref = None if args.baseline_ref.lower() == "none" else args.baseline_ref
    if args.no_isolation:
        cfg.isolation_variants = False
    if args.no_int8:
        cfg.int8_variant = False
    results = run(cfg, ["run", *argv[1:]] if argv and argv[0] == "run" else argv)
    text = render(results)
    print(text)
    if args.json:
        write_json(results, args.json)
        print(f"\nJSON: {args.json}", file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    gpu = results["sections"].get("gpu")
    if args.require_gpu and (not gpu or gpu.get("status") != "ok"):
        print(f"GPU figures refused: {gpu and gpu.get('reason')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
