"""Surfel area / contour length per neighbour code, exactly as surface-distance builds them."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ._normals import NEIGHBOUR_CODE_TO_NORMALS

__all__ = ["area_table"]


def area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Area (3D, 256 codes) or contour length (2D, 16 codes) of each neighbour code.

    The arithmetic mirrors ``surface_distance.lookup_tables`` operation by operation so
    that every entry is bit-identical for the same spacing.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) == 3:
        return _table_3d(spacing)
    if len(spacing) == 2:
        return _table_2d(spacing)
    raise ValueError(f"spacing must have 2 or 3 elements, got {len(spacing)}")


@lru_cache(maxsize=256)
def _table_3d(spacing: tuple[float, float, float]) -> np.ndarray:
    table = np.zeros([256])
    for code in range(256):
        normals = np.array(NEIGHBOUR_CODE_TO_NORMALS[code])
        sum_area = 0.0
        for k in range(normals.shape[0]):
            n = np.zeros([3])
            n[0] = normals[k, 0] * spacing[1] * spacing[2]
            n[1] = normals[k, 1] * spacing[0] * spacing[2]
            n[2] = normals[k, 2] * spacing[0] * spacing[1]
            sum_area += float(np.linalg.norm(n))
        table[code] = sum_area
    table.flags.writeable = False
    return table


@lru_cache(maxsize=256)
def _table_2d(spacing: tuple[float, float]) -> np.ndarray:
    # Codes: bit 3 top-left, bit 2 top-right, bit 1 bottom-left, bit 0 bottom-right.
    vertical = spacing[0]
    horizontal = spacing[1]
    diag = 0.5 * math.sqrt(spacing[0] ** 2 + spacing[1] ** 2)
    table = np.zeros([256])  # padded to 256 so codes index it like the 3D table
    for code, value in (
        (0b0001, diag), (0b0010, diag), (0b0011, horizontal), (0b0100, diag),
        (0b0101, vertical), (0b0110, 2 * diag), (0b0111, diag), (0b1000, diag),
        (0b1001, 2 * diag), (0b1010, vertical), (0b1011, diag), (0b1100, horizontal),
        (0b1101, diag), (0b1110, diag),
    ):  # fmt: skip
        table[code] = value
    table.flags.writeable = False
    return table
