"""Vertebral bodies on films with a wider field of view than the training films (skull to pelvis).

`localise_and_segment(registry, pixels)`:
1. the usual segmentation (the whole film letterboxed into the model);
2. keep the vertical chain of vertebra components (`spine_core.spine_chain.keep_chain`): blobs in the
   skull, on ribs or clavicles, off the column, are dropped;
3. when that chain covers less than `LocalisationSettings.max_chain_share` of the film's height (a film
   that shows much more than the spine; the AASCE training films are cropped to it, where the chain
   covers most of the height), segment again with the SAME model in a window around the chain, extended
   upwards (the first pass misses the upper thoracic vertebrae of a full-body film) and a little
   downwards, at the model's own input size, and keep the chain of that second pass.

Only the registry's public methods are used; the caller decides where to wire it (for the HTTP layer,
inside the AP segmentation of `Ap_Vertebra`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.inference import ModelRegistry
from spine_core.preprocessing import CropBox, crop_probabilities_to_source, preprocess_crop, to_unet_batch
from spine_core.spine_chain import keep_chain, spine_window

STRUCTURE = "Ap_Vertebra"


@dataclass(frozen=True)
class LocalisationSettings:
    """The rule and the windows (defaults chosen on the 5 large films and the AASCE validation split, docs/fov.md).

    Margins are in vertebral-body widths (the chain's `unit`), so they hold at any resolution.
    """

    max_chain_share: float = 0.6  # windowed passes only when the first chain spans less of the film's height
    search: tuple[float, float] = (6.0, 3.0)  # second pass: widths added above / below the first chain
    fit: tuple[float, float] = (1.5, 1.5)  # third pass: widths added above / below the second pass's chain
    side: float = 0.5  # share of the chain's width added on each side (then grown to the input's aspect)
    chain_first_pass: bool = True  # keep only the chain when no windowed pass runs


@dataclass
class Localised:
    mask: np.ndarray  # bool, original size: the answer
    first_pass: np.ndarray  # bool, original size: the plain segmentation
    window: CropBox | None  # the window of the pass whose chain was kept, None for the first pass
    chain_share: float  # the first chain's height / the film's height
    passes: int = 1  # segmentations run
    bodies: list[float] = field(default_factory=list)  # effective vertebral bodies in each pass's chain


def segment_window(registry: ModelRegistry, pixels: np.ndarray, box: CropBox, structure: str = STRUCTURE) -> np.ndarray:
    """`structure`'s model run on a window of the film at its own input size -> bool mask at the film's size."""
    model = registry.segmentation_model(structure)
    if model is None:
        raise ValueError(f"no segmentation model for {structure!r}")
    batch = to_unet_batch([preprocess_crop(pixels, box)])
    spec = next(s for s in model.inputs if s.name == model.entry.input_name)
    out = registry.run(model.name, {model.entry.input_name: batch.astype(spec.dtype)}, [model.entry.output_name])
    probabilities = np.asarray(out[model.entry.output_name][0, :, :, 0], dtype=np.float32)
    return crop_probabilities_to_source(probabilities, box) >= model.threshold


def localise_and_segment(registry: ModelRegistry, pixels: np.ndarray, settings: LocalisationSettings | None = None) -> Localised:
    """The Ap_Vertebra mask of one decoded AP film (any size), with off-spine blobs removed (module doc)."""
    settings = settings or LocalisationSettings()
    first = registry.segment(pixels, "AP", [STRUCTURE]).masks[STRUCTURE]
    chain = keep_chain(first)
    extent = chain.extent
    share = 0.0 if extent is None else (extent[1] - extent[0]) / first.shape[0]
    result = Localised(chain.mask if settings.chain_first_pass else first, first, None, share, 1, [chain.bodies])
    if extent is None or share >= settings.max_chain_share:
        return result
    model = registry.segmentation_model(STRUCTURE)
    assert model is not None  # segment() above raised otherwise
    best = -1.0  # the first pass's chain is kept only when no window finds one
    for up, down in (settings.search, settings.fit):
        box = spine_window(chain.mask, model.input_hw, up * chain.unit, down * chain.unit, settings.side)
        assert box is not None  # the chain is not empty
        found = keep_chain(segment_window(registry, pixels, box))
        result.passes += 1
        result.bodies.append(found.bodies)
        if found.extent is None:
            break
        if found.bodies > best:  # the window whose chain holds the most bodies
            best, result.mask, result.window = found.bodies, found.mask, box
        chain = found
    return result
