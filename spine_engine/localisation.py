"""Vertebral bodies on films with a wider field of view than the training films (skull to pelvis).

`localise_and_segment(registry, pixels)` (docs/fov.md has the figures behind each rule):
1. the usual segmentation: the whole film letterboxed into the model;
2. its vertical chain of vertebra components (`spine_core.spine_chain.keep_chain`), without a skull or
   sacrum blob at its ends; when that spans at least `max_chain_share` of the film's height (a film
   cropped to the spine, like the AASCE training films) the answer is step 1's mask, unchanged;
3. otherwise the SAME model runs again at its own input size on a window around that chain, extended
   upwards (a full-body film's first pass misses the upper thoracic vertebrae) and downwards, then on a
   tighter window around what it found; each result is reduced to its chain;
4. the windowed chain with the most vertebral bodies is the answer if it holds at least `min_gain` more
   bodies than the first pass's chain; if not, step 1's mask is.

Only the registry's public methods are used (every run through its scheduler); the caller decides where to
wire it (the analysis: inside the AP reading of `Ap_Vertebra`; `spine_core.preprocessing.letterbox_mask`
puts the answer into the classifier's frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spine_core.preprocessing import CropBox, crop_probabilities_to_source, preprocess_crop, to_unet_batch
from spine_core.spine_chain import MAX_GAP, keep_chain, spine_window
from spine_engine.registry import ModelRegistry
from spine_engine.segmentation import Segmenter

STRUCTURE = "Ap_Vertebra"


@dataclass(frozen=True)
class LocalisationSettings:
    """The rule and the windows (defaults chosen on the 5 large films and the AASCE validation split, docs/fov.md).

    Margins are in vertebral-body widths (the chain's `unit`), so they hold at any resolution.
    """

    max_chain_share: float = 0.6  # windowed passes only when the first chain spans less of the film's height
    search: tuple[float, float] = (6.0, 3.0)  # second pass: widths added above / below the first chain
    search_up_share: float = 0.6  # ... and above it at least this share of its height
    fit: tuple[float, float] = (1.5, 1.5)  # third pass: widths added above / below the second pass's chain
    side: float = 0.5  # share of the chain's width added on each side (then grown to the input's aspect)
    trim_ends: bool = True  # windowed passes: drop a sacrum / skull blob ending the chain (spine_chain.trim_*)
    min_gain: float = 3.0  # a window's chain is kept only with this many more bodies than the first chain
    chain_first_pass: bool = False  # when no window's chain is kept: the first chain (True) or the plain mask
    max_gap: float = MAX_GAP  # chain: largest gap between bodies, in body widths (spine_chain.best_chain)


@dataclass
class Localised:
    mask: np.ndarray  # bool, original size: the answer
    first_pass: np.ndarray  # bool, original size: the plain segmentation
    window: CropBox | None  # the window of the pass whose chain was kept, None when the first pass's was
    chain_share: float  # the first chain's height (skull and sacrum trimmed) / the film's height
    passes: int = 1  # segmentations run
    bodies: list[float] = field(default_factory=list)  # effective vertebral bodies in each pass's chain


def segment_window(registry: ModelRegistry, pixels: np.ndarray, box: CropBox, structure: str = STRUCTURE) -> np.ndarray:
    """`structure`'s model run on a window of the film at its own input size -> bool mask at the film's size."""
    model = registry.segmentation_model(structure)
    if model is None:
        raise ValueError(f"no segmentation model for {structure!r}")
    batch = to_unet_batch([preprocess_crop(pixels, box)])
    spec = next(s for s in model.inputs if s.name == model.entry.input_name)
    # Through the scheduler like every session run: on a slot, batched with other requests' inputs of this model.
    (out,) = registry.infer([(model, batch.astype(spec.dtype))])
    probabilities = np.asarray(out[0, :, :, 0], dtype=np.float32)
    return crop_probabilities_to_source(probabilities, box) >= model.threshold


def localise_and_segment(registry: ModelRegistry, pixels: np.ndarray, settings: LocalisationSettings | None = None) -> Localised:
    """The Ap_Vertebra mask of one decoded AP film (any size), with off-spine blobs removed (module doc)."""
    return localise(registry, pixels, Segmenter(registry).segment(pixels, "AP", [STRUCTURE]).masks[STRUCTURE], settings)


def localise(
    registry: ModelRegistry, pixels: np.ndarray, first: np.ndarray, settings: LocalisationSettings | None = None
) -> Localised:
    """`localise_and_segment` from a first-pass mask already at hand (bool, the film's size)."""
    settings = settings or LocalisationSettings()
    chain = keep_chain(first, settings.max_gap)
    # The windows are placed from the spine without sacrum and skull (a full-body film's first pass marks them).
    spine = keep_chain(first, settings.max_gap, trim_ends=True) if settings.trim_ends else chain
    extent = spine.extent or chain.extent
    share = 0.0 if extent is None else (extent[1] - extent[0]) / first.shape[0]
    result = Localised(chain.mask if settings.chain_first_pass else first, first, None, share, 1, [chain.bodies])
    if spine.extent is None or share >= settings.max_chain_share:
        return result
    model = registry.segmentation_model(STRUCTURE)
    assert model is not None  # segment() above raised otherwise
    best = chain.bodies + settings.min_gain - 1e-9  # a window must find clearly more bodies than the first pass
    for k, (up, down) in enumerate((settings.search, settings.fit)):
        top, bottom = spine.extent[:2]  # type: ignore[index]  # never empty here
        up_px = up * spine.unit
        if k == 0:  # the first window also reaches up by a share of the chain: the missed part scales with it
            up_px = max(up_px, settings.search_up_share * (bottom - top))
        box = spine_window(spine.mask, model.input_hw, up_px, down * spine.unit, settings.side)
        assert box is not None  # the chain is not empty
        found = keep_chain(segment_window(registry, pixels, box), settings.max_gap, trim_ends=settings.trim_ends)
        result.passes += 1
        result.bodies.append(found.bodies)
        if found.extent is None:
            break
        if found.bodies > best:  # the window whose chain holds the most bodies
            best, result.mask, result.window = found.bodies, found.mask, box
        spine = found
    return result
