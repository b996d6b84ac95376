"""DSC and NSD against the outside reference: DeepMind's surface-distance 0.1 (PyPI).

Reference values come from ``surface_distance.compute_surface_dice_at_tolerance(
surface_distance.compute_surface_distances(gt, pred, spacing), tol)`` run in the same
test; on NumPy 2 it crashes when a mask is empty (``np.Inf``), which the helper reports.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evaluator
from evaluator import _surface
from evaluator._tables import area_table

import surface_distance as sd

CRASHED = "crashed"


def ref_nsd(gt, pred, spacing, tol):
    """surface-distance's NSD, or CRASHED where it hits NumPy 2's missing np.Inf/np.NaN."""
    try:
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            # it imports scipy.ndimage.filters / .morphology, deprecated namespaces
            warnings.simplefilter("ignore", DeprecationWarning)
            d = sd.compute_surface_distances(gt, pred, list(spacing))
            return float(sd.compute_surface_dice_at_tolerance(d, tol))
    except AttributeError as exc:
        assert "np.Inf" in str(exc) or "np.NaN" in str(exc) or "Inf" in str(exc) or "NaN" in str(exc), exc
        return CRASHED


def ref_dice(gt, pred):
    try:
        return float(sd.compute_dice_coefficient(gt, pred))
    except AttributeError:
        return CRASHED


# --------------------------------------------------------------------------- masks


def _mask(rng, shape, style):
    if style == "noise":
        return rng.random(shape) < rng.uniform(0.05, 0.95)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    if style == "ball":
        c = [rng.uniform(-1, n) for n in shape]
        r = [rng.uniform(0.5, n) for n in shape]
        q = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r))
        return q <= 1.0
    # blocks: union of a few boxes
    m = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        lo = [rng.integers(0, n) for n in shape]
        hi = [rng.integers(lo_i, n) + 1 for lo_i, n in zip(lo, shape)]
        m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def _tie_tolerance(rng, spacing):
    """A tolerance equal (in floating point, as scipy computes it) to a lattice distance."""
    off = [int(rng.integers(0, 4)) for _ in spacing]
    sq = None
    for d, s in zip(off, spacing):
        v = float(np.float64(d) * s)
        v = v * v
        sq = v if sq is None else sq + v
    return math.sqrt(sq)


case_params = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.sampled_from(["noise", "ball", "blocks"]),
    st.sampled_from(["noise", "ball", "blocks"]),
    st.sampled_from(["float", "tie", "fixed"]),
)


def _draw_case(params, nd, max_side):
    seed, style_a, style_b, tol_kind = params
    rng = np.random.default_rng(seed)
    shape = tuple(int(rng.integers(1, max_side + 1)) for _ in range(nd))
    a = _mask(rng, shape, style_a)
    b = _mask(rng, shape, style_b)
    if rng.random() < 0.3:  # nearby copies: distances around the tolerance
        b = np.roll(a, int(rng.integers(-3, 4)), axis=int(rng.integers(0, nd)))
    spacing = tuple(float(rng.choice([rng.uniform(0.3, 3.0), 1.0, 0.5, 0.8, 2.5])) for _ in range(nd))
    if tol_kind == "float":
        tol = float(rng.uniform(0, 5))
    elif tol_kind == "tie":
        tol = _tie_tolerance(rng, spacing)
    else:
        tol = float(rng.choice([0.0, 1.0, 2.0, 3.0]))
    return a, b, spacing, tol


def _check_against_reference(a, b, spacing, tol):
    ours = evaluator.nsd(a, b, spacing, tol)
    ref = ref_nsd(a, b, spacing, tol)
    if ref is CRASHED:
        # only possible with an empty mask; our documented values instead
        assert not (a.any() and b.any())
        assert ours == 0.0
    elif not (a.any() or b.any()):
        assert math.isnan(ours)
    else:
        assert abs(ours - ref) <= 1e-9, (ours, ref)
    d = evaluator.dice(a, b)
    rd = ref_dice(a, b)
    if rd is CRASHED:
        assert math.isnan(d)
    else:
        assert d == rd


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case_params)
def test_nsd_matches_surface_distance_3d(params):
    _check_against_reference(*_draw_case(params, 3, 14))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case_params)
def test_nsd_matches_surface_distance_2d(params):
    _check_against_reference(*_draw_case(params, 2, 40))


def test_thin_axes_and_size_one_axes_match_reference():
    rng = np.random.default_rng(7)
    for shape in [(1, 30, 30), (30, 1, 30), (30, 30, 1), (1, 1, 40), (1, 40), (40, 1), (70, 3, 130)]:
        for _ in range(5):
            a = rng.random(shape) < 0.4
            b = rng.random(shape) < 0.4
            sp = tuple(rng.uniform(0.4, 2.0, len(shape)))
            _check_against_reference(a, b, sp, 2.0)


def test_large_tolerance_uses_distance_transform_and_still_matches(monkeypatch):
    rng = np.random.default_rng(3)
    a = _mask(rng, (20, 24, 18), "ball")
    b = np.roll(a, 5, axis=1)
    spacing = (0.7, 0.5, 1.3)
    ref = ref_nsd(a, b, spacing, 2.2)
    fast = evaluator.nsd(a, b, spacing, 2.2)
    monkeypatch.setattr(_surface, "_MAX_OFFSET_ROWS", 0)  # force the fallback
    slow = evaluator.nsd(a, b, spacing, 2.2)
    assert abs(fast - ref) <= 1e-12 and abs(slow - ref) <= 1e-12
    assert 0.0 < ref < 1.0


def test_cropping_never_changes_the_result():
    rng = np.random.default_rng(11)
    a = _mask(rng, (9, 11, 10), "ball")
    b = np.roll(a, 2, axis=2)
    spacing = (1.2, 0.6, 0.9)
    base = evaluator.nsd(a, b, spacing, 2.0)
    big_a = np.zeros((40, 41, 43), bool)
    big_b = np.zeros_like(big_a)
    for off in [(0, 0, 0), (31, 30, 33), (12, 5, 20)]:
        big_a[:] = False
        big_b[:] = False
        sl = tuple(slice(o, o + n) for o, n in zip(off, a.shape))
        big_a[sl], big_b[sl] = a, b
        assert evaluator.nsd(big_a, big_b, spacing, 2.0) == pytest.approx(base, abs=1e-15)
        assert evaluator.nsd(big_a, big_b, spacing, 2.0) == pytest.approx(ref_nsd(big_a, big_b, spacing, 2.0), abs=1e-12)


# --------------------------------------------------------------------------- analytic


def test_cube_surfel_area_is_564_1_not_600():
    cube = np.zeros((14, 14, 14), bool)
    cube[2:12, 2:12, 2:12] = True
    ov = evaluator.surface_overlap_of(cube, cube, (1.0, 1.0, 1.0), 0.0)
    assert ov.area_a == pytest.approx(564.1, abs=0.05)
    assert ov.area_a == ov.area_b == ov.overlap_a == ov.overlap_b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = sd.compute_surface_distances(cube, cube, [1.0, 1.0, 1.0])
    assert ov.area_a == pytest.approx(float(np.sum(ref["surfel_areas_gt"])), rel=1e-12)


def test_area_tables_are_bit_identical_to_surface_distance():
    for sp in [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (2.5, 0.8, 0.8), (0.3, 1.7, 0.9)]:
        ours = area_table(sp)
        ref = sd.lookup_tables.create_table_neighbour_code_to_surface_area(sp)
        assert np.array_equal(ours, ref)
    for sp in [(1.0, 1.0), (0.5, 0.5), (0.3, 1.7)]:
        ours = area_table(sp)[:16]
        ref = sd.lookup_tables.create_table_neighbour_code_to_contour_length(sp)
        assert np.array_equal(ours, ref)


def _sphere(shape, spacing, r, center):
    g = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((x - c) ** 2 for x, c in zip(g, center)) <= r**2


@pytest.mark.parametrize(
    "r, shift, nsd_expected, dsc_expected",
    [
        # DeepMind surface-distance (= MONAI use_subvoxels) on a sphere r=30 mm, spacing (1.0, 0.8, 2.5), tau 2 mm
        (30.0, (3.0, 0.0, 0.0), 0.846799, 0.924965),
        (30.0, (0.0, 0.0, 2.5), 0.851048, 0.937624),
    ],
)
def test_shifted_spheres_match_published_values(r, shift, nsd_expected, dsc_expected):
    spacing = (1.0, 0.8, 2.5)
    shape = (80, 100, 32)
    center = np.array([(n - 1) * s / 2 for n, s in zip(shape, spacing)])  # volume centre, mm
    a = _sphere(shape, spacing, r, center)
    b = _sphere(shape, spacing, r, center + np.array(shift))
    assert evaluator.nsd(a, b, spacing, 2.0) == pytest.approx(nsd_expected, abs=5e-7)
    assert evaluator.dice(a, b) == pytest.approx(dsc_expected, abs=5e-7)
    assert evaluator.nsd(a, b, spacing, 2.0) == pytest.approx(ref_nsd(a, b, spacing, 2.0), abs=1e-12)


def test_oblique_shift_matches_reference():
    # the third published row's exact construction is not recorded; compare with the oracle
    spacing = (1.0, 0.8, 2.5)
    shape = (80, 100, 32)
    center = np.array([(n - 1) * s / 2 for n, s in zip(shape, spacing)])
    a = _sphere(shape, spacing, 27.0, center)
    b = _sphere(shape, spacing, 27.0, center + np.array([1.5, 1.2, 3.75]))
    ours = evaluator.nsd(a, b, spacing, 2.0)
    assert 0.3 < ours < 0.9
    assert ours == pytest.approx(ref_nsd(a, b, spacing, 2.0), abs=1e-12)


def test_shifted_disk_2d_matches_published_value():
    spacing = (0.5, 0.5)
    center = np.array([49.75, 49.75])  # centre of a 200 x 200 image, mm
    a = _sphere((200, 200), spacing, 25.0, center)
    b = _sphere((200, 200), spacing, 25.0, center + np.array([0.0, 2.5]))
    assert evaluator.nsd(a, b, spacing, 2.0) == pytest.approx(0.688366, abs=5e-7)
    assert evaluator.dice(a, b) == pytest.approx(0.936387, abs=5e-7)


def test_tolerance_is_inclusive():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2:5, 2:5] = True
    b[2:5, 4:7] = True  # surfaces 2 px apart along axis 1
    at = evaluator.nsd(a, b, (1.0, 1.0), 2.0)
    below = evaluator.nsd(a, b, (1.0, 1.0), np.nextafter(2.0, 0.0))
    assert at > below
    assert at == pytest.approx(ref_nsd(a, b, (1.0, 1.0), 2.0), abs=1e-15)


# --------------------------------------------------------------------------- empty masks


@pytest.mark.parametrize("nd", [2, 3])
def test_every_empty_mask_combination(nd):
    shape = (6,) * nd
    full = np.zeros(shape, bool)
    full[(slice(1, 4),) * nd] = True
    empty = np.zeros(shape, bool)
    sp = (1.0,) * nd
    # both empty: undefined -> NaN (the reference returns NaN, or crashes in dice)
    assert math.isnan(evaluator.dice(empty, empty))
    assert math.isnan(evaluator.nsd(empty, empty, sp, 2.0))
    # exactly one empty: 0 (the reference crashes here on NumPy 2)
    for g, p in [(full, empty), (empty, full)]:
        assert evaluator.dice(g, p) == 0.0
        assert evaluator.nsd(g, p, sp, 2.0) == 0.0
        assert ref_nsd(g, p, sp, 2.0) is CRASHED  # documents why we cannot compare here
    assert evaluator.dice(full, full) == 1.0
    assert evaluator.nsd(full, full, sp, 2.0) == 1.0


def test_input_validation():
    a = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="same shape"):
        evaluator.dice(a, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2D or 3D"):
        evaluator.dice(np.zeros(4, bool), np.zeros(4, bool))
    with pytest.raises(ValueError, match="spacing"):
        evaluator.nsd(a, a, (1.0,), 2.0)
    with pytest.raises(ValueError, match="spacing"):
        evaluator.nsd(a, a, (1.0, 0.0), 2.0)
    with pytest.raises(ValueError, match="tolerance"):
        evaluator.nsd(a, a, (1.0, 1.0), -1.0)
    with pytest.raises(ValueError, match="dtype"):
        evaluator.dice(a.astype(float), a)
    # integer masks are read as != 0
    b = np.zeros((4, 4), np.uint8)
    b[1:3, 1:3] = 7
    assert evaluator.dice(b, b > 0) == 1.0
