"""The AASCE evaluation protocol that training, export, quantization and evaluation must share.

Which films are validation (patient-grouped, fixed seed) and which are Damaged (largest Cobb angle at or
over the threshold). One module, imported by all of them and importing none of them: the split cannot
drift between the run that trains a model and the command that scores it.
"""

from __future__ import annotations

import numpy as np

from spine_core.structures import DAMAGED_COBB_DEG
from training.datasets import split_by_patient

COBB_THRESHOLD_DEG = DAMAGED_COBB_DEG  # the label policy of the AASCE films: spine_core says what Damaged means
VAL_FRACTION = 0.2
SPLIT_SEED = 0


def aasce_split(
    cache: dict[str, np.ndarray], val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[int], list[int]]:
    """(train, val) indices of a cache built by `spine-train cache aasce`."""
    return split_by_patient([str(k) for k in cache["patient_keys"]], val_fraction, seed)


def aasce_sample_split(samples: list) -> tuple[list[int], list[int]]:
    """(train, val) indices of AASCE samples (`read_aasce_dataset`): the split `aasce_split` makes of a cache."""
    return split_by_patient([s.patient_key for s in samples], VAL_FRACTION, SPLIT_SEED)


def split_description() -> str:
    return f"patient-grouped, validation fraction {VAL_FRACTION}, seed {SPLIT_SEED}"
