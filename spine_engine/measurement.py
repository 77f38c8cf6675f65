"""The measurement of an AP film: the vertebrae T1-L5 and the Cobb angles.

`measure_spine` is the one place a reading is made. Two ways to find the vertebrae sit behind it:

- `landmarks` (the default when the manifest has a servable landmark model): the landmark model's heatmap
  peaks and corner offsets (`spine_core.landmark_reader`, two passes on a full-body film), run through the
  registry's scheduler; always 17 vertebrae with a confidence each;
- `mask`: the geometry of the `Ap_Vertebra` mask (`spine_core.vertebrae`).

With a tilt model in the manifest (and `tilt_model` on), each of the landmark model's 17 vertebrae is then cut
from the film at its own resolution, turned level, and turned once more by what the tilt model reads there
(`spine_core.vertebra_tilt`): the angles are differences of these tilts.

With an ends model (and `ends_model` on), each vertebra of the landmark model's chain is cut from the film too
and the ends model's answer (C7, T1, T2, L4, L5, S1 or another) votes in the placement of the 17 levels
(`spine_core.vertebra_ends`), on each pass.

`landmark_reading` runs the model before the spine check, because what it sees can stand in for a patchy
mask (`spine_core.spine_gate.check_spine(landmark_features=...)`). Its first pass needs nothing the U-Net
answers, so `start_first_pass` queues it beside the U-Net's run (two inference slots: about 1.8x less wall time
for the two networks of an AP film on 2 cores than one after the other).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from spine_core.cobb import CobbResult, cobb_angles
from spine_core.landmark_metrics import fill_vertebrae
from spine_core.landmark_reader import (
    SERVED_BEYOND,
    SERVED_SIDE,
    frame_to_source,
    read_vertebrae,
    source_to_frame,
    spine_corridor,
)
from spine_core.landmarks import find_chain
from spine_core.preprocessing import CropBox, Letterbox, preprocess_image, to_grayscale
from spine_core.vertebra_ends import ends_crops
from spine_core.vertebra_tilt import crops_for, refine_tilts
from spine_core.vertebrae import VertebraeResult, find_vertebrae
from spine_engine.models import LoadedModel
from spine_engine.policy import AnalysisPolicy
from spine_engine.registry import ModelRegistry


@dataclass(frozen=True)
class Measurement:
    vertebrae: VertebraeResult
    cobb: CobbResult | None  # None when the 17 vertebrae were not all found, or their corners give no angle
    source: str = "mask"  # the landmark model's name, or "mask"


@dataclass(frozen=True)
class FirstPass:
    """The landmark model's answer on the whole film, run before the reading began (beside the U-Net)."""

    heads: np.ndarray  # (H, W, channels)
    frame: tuple[np.ndarray, Letterbox]  # its input and letterbox
    inference_ms: float


@dataclass
class LandmarkReading:
    model: LoadedModel
    vertebrae: VertebraeResult
    inference_ms: float = 0.0  # the model's own runs, apart from the geometry (the first pass's included)
    overlapped_ms: float = 0.0  # of which ran beside the U-Net, before the reading began (not waited for)
    notes: list[str] = field(default_factory=list)
    window: CropBox | None = None  # a full-body film's second-pass window (original pixels)
    tilt_model: LoadedModel | None = None  # the model that turned the vertebrae, if one did
    tilt_ms: float = 0.0  # its run
    ends_model: LoadedModel | None = None  # the model that voted in the level placement, if it was asked
    ends_ms: float = 0.0  # its runs (one per pass)
    # The model's answer on the pass kept and its frame (kept by reference, read only by `chain_corners`)
    heads: np.ndarray | None = None
    frame: Letterbox | CropBox | None = None

    def chain_corners(self) -> np.ndarray | None:
        """(k, 4, 2) every body the model saw down the spine on the pass kept (cervical and sacral ones too), in
        the film's pixels, top to bottom: what tools that label the chain read (`training.ends_full_body`)."""
        chain = find_chain(self.heads) if self.heads is not None and self.frame is not None else None
        return None if chain is None else frame_to_source(chain.corners, self.frame)

    def features(self, height: int) -> dict[str, float]:
        """What the spine check reads of it: vertebrae seen (not interpolated), their span, their confidence."""
        seen = [v for v in self.vertebrae.vertebrae if v.detected]
        if not seen:
            return {"landmark_vertebrae": 0.0, "landmark_extent": 0.0, "landmark_score": 0.0}
        top, bottom = seen[0].corners[:2, 1].mean(), seen[-1].corners[2:, 1].mean()
        return {
            "landmark_vertebrae": float(len(seen)),
            "landmark_extent": float((bottom - top) / max(height, 1)),
            "landmark_score": float(np.mean([v.confidence for v in seen])),
        }


def landmark_model(registry: ModelRegistry, policy: AnalysisPolicy) -> LoadedModel | None:
    return registry.landmark_model() if policy.measurement == "landmarks" else None


def serves_corner_mask(registry: ModelRegistry, policy: AnalysisPolicy) -> bool:
    """Whether the answer's Ap_Vertebra mask is filled from the landmark model's corners (setting, else manifest)."""
    model = landmark_model(registry, policy)
    if model is None:
        return False
    return policy.vertebra_mask == "corners" or (policy.vertebra_mask == "auto" and model.entry.serves_mask)


def start_first_pass(registry: ModelRegistry, pixels: np.ndarray, policy: AnalysisPolicy) -> Future[FirstPass] | None:
    """Queue the landmark model's run on the whole film now, from a thread of its own (None without the model).

    The thread only waits on the scheduler (it is not one of its slots, so the slots cannot all end up waiting on
    each other); an error in the run is raised where the future is read."""
    model = landmark_model(registry, policy)
    if model is None:
        return None
    future: Future[FirstPass] = Future()

    def work() -> None:
        try:
            frame = preprocess_image(pixels, tuple(model.input_hw))
            started = time.perf_counter()
            heads = registry.infer([(model, frame[0][None, ..., None])])[0][0]
            future.set_result(FirstPass(heads, frame, (time.perf_counter() - started) * 1000))
        except BaseException as exc:  # handed to the reader, raised there
            future.set_exception(exc)

    threading.Thread(target=work, name="landmark-first-pass", daemon=True).start()
    return future


def landmark_reading(
    registry: ModelRegistry,
    pixels: np.ndarray,
    policy: AnalysisPolicy,
    frame: tuple[np.ndarray, Letterbox] | None = None,
    first_pass: Future[FirstPass] | None = None,
) -> LandmarkReading | None:
    """The landmark model's 17 vertebrae (None when the policy or the manifest has no landmark model).

    `frame`: the film letterboxed at some input size (the U-Net's input); used when it is the landmark model's.
    `first_pass`: `start_first_pass`'s run on this film, if one was started."""
    model = landmark_model(registry, policy)
    if model is None:
        return None
    wait_started = time.perf_counter()
    early = first_pass.result() if first_pass is not None else None
    waited_ms = (time.perf_counter() - wait_started) * 1000  # the part of the first pass the reading waited for
    spent = [early.inference_ms if early is not None else 0.0]

    def run(batch: np.ndarray) -> np.ndarray:  # through the scheduler, like every session run
        started = time.perf_counter()
        out = registry.infer([(model, batch)])[0]
        spent[0] += (time.perf_counter() - started) * 1000
        return out

    ends = registry.ends_model() if policy.ends_model else None
    ends_spent, ends_runs = [0.0], [0]  # a chain of exactly 17 leaves one placement: the model is not asked
    # The crop models read the film as float32 gray: converted once here, not once per pass (a full-body film
    # is ~13 Mpx, ~20 ms a conversion).
    crop_models = ends is not None or (policy.tilt_model and registry.tilt_model() is not None)
    gray = to_grayscale(pixels) if crop_models else pixels

    def read_ends(corners: np.ndarray) -> np.ndarray:  # the chain's vertebrae in the film's pixels -> log-probabilities
        assert ends is not None
        crops = ends_crops(gray, corners, ends.input_hw, float(ends.entry.preprocessing["crop_span"]))
        started = time.perf_counter()
        probs = registry.infer_across_slots(ends, crops)
        ends_spent[0] += (time.perf_counter() - started) * 1000
        ends_runs[0] += 1
        return np.log(np.maximum(probs.astype(np.float64), 1e-9))

    typical_peak = float(model.entry.metrics.get("val_median_peak", 1.0))
    out_hw = tuple(model.input_hw)
    # The first pass's own frame; else the U-Net's input when it is the landmark model's size; else None (its own).
    unet_frame = frame if frame is not None and frame[0].shape == out_hw else None
    own_frame = early.frame if early is not None else unet_frame
    reading = read_vertebrae(
        run,
        pixels,
        out_hw=out_hw,
        typical_peak=typical_peak,
        frame=own_frame,
        first_heads=early.heads if early is not None else None,
        read_ends=read_ends if ends is not None else None,
    )
    vertebrae = replace(reading.vertebrae, notes=[*reading.vertebrae.notes, *reading.notes])
    overlapped = max(0.0, early.inference_ms - waited_ms) if early is not None else 0.0
    tilt = registry.tilt_model() if policy.tilt_model and vertebrae.complete else None
    tilt_ms = 0.0
    if tilt is not None:
        vertebrae, tilt_ms = second_look(registry, tilt, gray, vertebrae)
    return LandmarkReading(
        model,
        vertebrae,
        spent[0],
        overlapped_ms=overlapped,
        window=reading.window,
        tilt_model=tilt,
        tilt_ms=tilt_ms,
        ends_model=ends if ends_runs[0] else None,
        ends_ms=ends_spent[0],
        heads=reading.heads,
        frame=reading.frame,
    )


def second_look(
    registry: ModelRegistry, model: LoadedModel, pixels: np.ndarray, vertebrae: VertebraeResult
) -> tuple[VertebraeResult, float]:
    """The 17 vertebrae (a complete chain) turned by the tilt model's reading of each one's crop, and the model's
    run time (ms)."""
    corners = vertebrae.corners()
    if corners is None:
        raise ValueError("the tilt model turns a complete chain of 17 vertebrae")
    crops = crops_for(pixels, corners, model.input_hw, float(model.entry.preprocessing["crop_span"]))
    started = time.perf_counter()
    answers = registry.infer_across_slots(model, crops)
    run_ms = (time.perf_counter() - started) * 1000
    turned = refine_tilts(corners, answers)
    return replace(vertebrae, vertebrae=[replace(v, corners=c) for v, c in zip(vertebrae.vertebrae, turned, strict=True)]), run_ms


def corridors(vertebrae: VertebraeResult, source_hw: tuple[int, int], frame: Letterbox) -> tuple[np.ndarray, np.ndarray] | None:
    """The bands along the 17 vertebrae (None without 17 vertebrae): the served mask's at the film's size, ending
    half-way through the discs beyond T1 and L5 and a tenth of a width beside each body, and the classifier's in the
    model frame, reaching further."""
    corners = vertebrae.corners()
    if corners is None:
        return None
    served = spine_corridor(corners, *source_hw, beyond=SERVED_BEYOND, side=SERVED_SIDE)
    return served, spine_corridor(source_to_frame(corners, frame), frame.out_h, frame.out_w)


def corner_mask(vertebrae: VertebraeResult, height: int, width: int) -> np.ndarray:
    """The 17 quadrilaterals the angles are read from, as a mask of the film's size."""
    return fill_vertebrae(np.stack([v.corners for v in vertebrae.vertebrae]), height, width)


def measure_spine(pixels: np.ndarray, vertebra_mask: np.ndarray, landmarks: LandmarkReading | None = None) -> Measurement:
    """The vertebrae (corners at the film's pixels) and Cobb angles of one AP film: from the landmark reading when
    there is one, else from its vertebra mask (bool, the film's size); `pixels` is the decoded film."""
    if landmarks is not None:
        vertebrae, source = landmarks.vertebrae, landmarks.model.name
    else:
        vertebrae, source = find_vertebrae(vertebra_mask), "mask"
    corners = vertebrae.corners()
    cobb = None
    if corners is not None:
        try:
            cobb = cobb_angles(corners, int(pixels.shape[0]), vertebrae.confidences())
        except ValueError as exc:  # degenerate corners: no angle rather than a wrong one
            vertebrae = replace(vertebrae, reason=f"the vertebrae's corners give no angle ({exc})")
    return Measurement(vertebrae, cobb, source)
