"""The promotion rule: when a retrained U-Net stops being a demonstration (`validated: true` in the manifest).

Applied by `spine-export promote` to the figures of `spine-evaluate course --heldout-of RUN` (Dice at the original
size, through the service's own code, on studies of patients the run never trained on); never set by hand.

A model is validated when BOTH hold:

1. at least MIN_HELDOUT_STUDIES (30) held-out studies were scored. With fewer, the mean Dice of one split is too
   noisy to decide on: at a per-study spread of 0.10 (what the validated Ap_Vertebra model shows on AASCE), 30
   studies put the 95 % interval of the mean at about ±0.036.
2. the lower end of the 95 % interval of the held-out mean Dice (mean - 1.96 * sd / sqrt(n)) is at least the
   structure's threshold (THRESHOLDS). The thresholds follow the structure's shape, because Dice punishes thin
   structures for the same boundary error: 0.80 for the vertebral bodies (the validated Ap_Vertebra model
   measures 0.850 on 90 held-out AASCE films; a replacement should be near it), 0.70 for the small blobs
   (pedicles, spinous processes, disc spaces: ~20-40 px across at the course films' size, where a 2-pixel boundary
   error alone costs 0.1-0.2), 0.60 for the vertebral lines (a few pixels wide).

The numbers are this project's policy, not a published standard; a site should compare them with the Dice between
two of its own annotators on the same films (docs/annotation.md) and change them here, in one place, if needed.
The manifest records the rule, its numbers and the figures it was applied to, so GET /models shows why.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spine_core.manifest import load_manifest, save_manifest

RULE = "heldout_studies >= min_studies and mean_dice - 1.96 * sd / sqrt(n) >= threshold (training/promotion.py)"
MIN_HELDOUT_STUDIES = 30
Z_95 = 1.96
THRESHOLDS = {
    "Ap_Vertebra": 0.80,
    "Lat_Vertebra": 0.80,
    "Ap_Pedicle": 0.70,
    "Ap_Spinous_Process": 0.70,
    "Lat_Spinous_Process": 0.70,
    "Lat_Disk_Height": 0.70,
    "Lat_Anterior_Vertebral_Line": 0.60,
    "Lat_Posterior_Vertebral_Line": 0.60,
}
DEMO_NOTE = "DEMONSTRATION MODEL: "


@dataclass
class Decision:
    structure: str
    validated: bool
    heldout_studies: int
    heldout_images: int
    dice_mean: float
    dice_sd: float
    dice_lower_95: float
    threshold: float
    min_studies: int
    rule: str = RULE
    reasons: list[str] = field(default_factory=list)


def decide(structure: str, dices: list[float], n_studies: int, min_studies: int = MIN_HELDOUT_STUDIES) -> Decision:
    """Apply the rule to per-image held-out Dice values of `n_studies` studies."""
    threshold = THRESHOLDS[structure]
    n = len(dices)
    mean = sum(dices) / n if n else float("nan")
    sd = math.sqrt(sum((d - mean) ** 2 for d in dices) / (n - 1)) if n > 1 else float("nan")
    lower = mean - Z_95 * sd / math.sqrt(n) if n > 1 else float("nan")
    reasons = []
    if n_studies < min_studies:
        reasons.append(f"{n_studies} held-out studies, the rule needs at least {min_studies}")
    if n < 2:
        reasons.append(f"{n} held-out image(s): no interval of the mean Dice (mean {mean:.3f})")
    elif not lower >= threshold:
        reasons.append(f"lower end of the 95% interval of the mean Dice {lower:.3f} is under the threshold {threshold:.2f}")
    return Decision(structure, not reasons, n_studies, n, mean, sd, lower, threshold, min_studies, reasons=reasons)


def promote(models_dir: Path, model: str, eval_json: Path, min_studies: int = MIN_HELDOUT_STUDIES) -> Decision:
    """Decide from `spine-evaluate course --heldout-of` output and write the decision into the model's manifest entry."""
    result = json.loads(Path(eval_json).read_text())
    heldout = result.get("heldout")
    if not heldout:
        raise SystemExit(f"{eval_json} has no held-out figures: run spine-evaluate course ... --heldout-of RUN_DIR")
    manifest = load_manifest(models_dir)
    entry = manifest.by_name().get(model)
    if entry is None or entry.structure != heldout["structure"]:
        raise SystemExit(f"{models_dir} has no model {model} for {heldout['structure']}")
    scored = result.get("models", {}).get(entry.structure, {}).get("sha256")
    if scored != entry.sha256:  # the figures must describe this very file
        raise SystemExit(f"{eval_json} scored a {entry.structure} file with sha256 {scored}, the manifest lists {entry.sha256}")
    decision = decide(entry.structure, heldout["dice"], heldout["n_studies"], min_studies)
    entry.validated = decision.validated
    entry.metrics.update(
        heldout_dice_mean=decision.dice_mean,
        heldout_dice_lower_95=decision.dice_lower_95,
        heldout_studies=decision.heldout_studies,
        heldout_images=decision.heldout_images,
        promotion={**asdict(decision), "decided_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()},
    )
    notes = entry.notes.split(DEMO_NOTE, 1)[-1] if DEMO_NOTE in entry.notes else entry.notes
    if decision.validated:
        entry.notes = f"Validated by the promotion rule on {decision.heldout_studies} held-out studies. {_tail(notes)}"
    else:
        why = "; ".join(decision.reasons)
        entry.notes = f"{DEMO_NOTE}not validated by the promotion rule ({why}); not for clinical or research use. {_tail(notes)}"
    save_manifest(manifest, models_dir)
    return decision


def _tail(notes: str) -> str:
    """The entry's notes without an earlier verdict (a model may be promoted again after more annotation)."""
    for marker in ("not for clinical or research use. ", "held-out studies. "):
        if marker in notes:
            notes = notes.split(marker, 1)[1]
    return notes.strip()
