"""Print the README's model table from exported_models/manifest.json (so the two cannot drift).

python -m training.model_table exported_models
"""

from __future__ import annotations

import sys
from pathlib import Path

from spine_core.manifest import ModelEntry, load_manifest


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _figures(entry: ModelEntry) -> str:
    keys = [k for k in entry.metrics if not k.endswith("protocol")]
    return "; ".join(f"{k} {_fmt(entry.metrics[k])}" for k in keys)


def _int8(entry: ModelEntry) -> str:
    variant = entry.variants.get("int8")
    if variant is None:
        return "—"
    a = variant.agreement
    text = f"mask Dice vs fp32 {_fmt(a['mask_dice_vs_fp32_mean'])} on {a['n_images']} held-out image(s)"
    figures = "; ".join(f"{k} {_fmt(v)}" for k, v in variant.metrics.items())
    return f"{text}; {figures}" if figures else text


def model_table(models_dir: Path) -> str:
    manifest = load_manifest(models_dir)
    rows = [
        "| model | view | validated | trained on | epochs | input | params | parity | measured "
        "| int8 variant (`SPINE_PRECISION=int8`) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in manifest.models:
        validated = "yes" if e.validated else "**no — demonstration**"
        data = e.training_data.split(";")[0]
        shape = "×".join(str(d) for d in e.input_shape[1:3])
        view = e.view or "any mask"
        if e.kind == "refinement":
            view += f", second stage of `{e.refines}` (combine: {e.combine})"
        rows.append(
            f"| `{e.name}` | {view} | {validated} | {data} | {e.epochs} | {shape} | "
            f"{e.parameters / 1e6:.2f} M | {e.parity_max_abs_diff:.1e} | {_figures(e)} | {_int8(e)} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(model_table(Path(sys.argv[1] if len(sys.argv) > 1 else "exported_models")))
