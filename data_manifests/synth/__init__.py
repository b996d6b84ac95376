"""Realistic synthetic cases for every modality of the challenge, deterministic by RNG state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..schema import VOLUME_MODALITIES
from ._common import RegenerateCase, SynthCase
from .color import make_dermoscopy, make_endoscopy, make_fundus, make_microscopy
from .grayscale import make_mammography, make_oct, make_us, make_xray
from .volumes import make_ct, make_mr, make_pet

__all__ = ["MAKERS", "SynthCase", "synthesize", "DIM", "RegenerateCase"]

#: modality → generator function ``(rng, spatial shape) -> SynthCase``
MAKERS: dict[str, Callable[[np.random.Generator, Any], SynthCase]] = {
    "CT": make_ct,
    "MR": make_mr,
    "PET": make_pet,
    "US": make_us,
    "X-Ray": make_xray,
    "Endoscopy": make_endoscopy,
    "Fundus": make_fundus,
    "Microscopy": make_microscopy,
    "OCT": make_oct,
    "Dermoscopy": make_dermoscopy,
    "Mammography": make_mammography,
}

DIM = {m: (3 if m in VOLUME_MODALITIES else 2) for m in MAKERS}


def synthesize(modality: str, rng: np.random.Generator, shape: tuple[int, ...], *, attempts: int = 25) -> SynthCase:
    """Draw one case; a draw whose structures came out unusable is redrawn from the same stream."""
    maker = MAKERS[modality]
    last = None
    for _ in range(attempts):
        try:
            return maker(rng, tuple(shape))
        except RegenerateCase as exc:
            last = exc
    raise RuntimeError(f"{modality}: could not generate a valid case in {attempts} draws ({last})")
