"""3D modalities: CT (abdomen), MR (brain, varying sequence), PET (torso).

Volumes are ``(D, H, W)`` = (z, y, x); spacing is returned in the same array-axis order
``(sz, sy, sx)`` in mm. Physical sizes are fixed in mm and the spacing follows from the field
of view, so a bigger matrix is a finer sampling of the same anatomy. Image row 0 is anterior
and image column 0 is the patient's right (radiological display).
"""

from __future__ import annotations

from typing import Any
import numpy as np

from ._common import SynthCase, blob, ellipse_field, finalize_labels, gauss, grid, smooth_noise, to_uint8

__all__ = ["make_ct", "make_mr", "make_pet"]


def _spacing(rng: np.random.Generator, shape: tuple[int, ...], fov_xy: tuple[float, float],
             coverage_z: tuple[float, float]) -> tuple[float, float, float]:
    d, h, w = shape
    s_xy = float(np.round(rng.uniform(*fov_xy) / w, 3))
    s_z = float(np.round(rng.uniform(*coverage_z) / d, 2))
    return (s_z, s_xy, s_xy)


def _sample_inside(rng: np.random.Generator, mask: np.ndarray, coords: Any) -> tuple[float, ...]:
    idx = np.flatnonzero(mask.ravel())
    if idx.size == 0:
        from ._common import RegenerateCase

        raise RegenerateCase("no room to place a nested structure")
    flat = int(idx[rng.integers(idx.size)])
    pos = np.unravel_index(flat, mask.shape)
    return tuple(float(c.ravel()[p] if c.size > 1 else c.ravel()[0]) for c, p in zip(coords, pos))


def _erode(mask: np.ndarray, iters: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(mask, iterations=iters) if iters > 0 else mask


def make_ct(rng: np.random.Generator, shape: tuple[int, int, int]) -> SynthCase:
    """Contrast-enhanced abdominal CT, HU-like values shown through a soft-tissue window."""
    spacing = _spacing(rng, shape, (330, 420), (130, 190))
    Z, Y, X = grid(shape, spacing)
    zc = shape[0] * spacing[0] / 2.0
    hu = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    wob = smooth_noise(rng, shape, (2, 6, 6))

    ax, ay = rng.uniform(135, 165), rng.uniform(100, 120)
    body = blob([Y, X], (6.0, 0.0), (ay, ax), wobble=wob, amount=0.02)
    fat_t = rng.uniform(12, 30)
    inner = blob([Y, X], (6.0, 0.0), (ay - fat_t, ax - fat_t), wobble=wob, amount=0.02)
    cavity = blob([Y, X], (0.0, 0.0), (ay - fat_t - 10, ax - fat_t - 10), wobble=wob, amount=0.03)
    body, inner, cavity = (np.broadcast_to(m, shape) for m in (body, inner, cavity))
    hu[body] = -105.0
    hu[inner] = 48.0                                      # abdominal wall muscle
    # bowel and mesenteric fat: smooth noise decides which is which, plus a few gas pockets
    gut = smooth_noise(rng, shape, (1.5, 4, 4))
    hu[cavity] = np.where(gut[cavity] > 0.1, 35.0, -95.0)
    gas = cavity & (smooth_noise(rng, shape, (1.2, 3, 3)) > 2.0)
    hu[gas] = -850.0

    sy = ay * 0.55
    vert = blob([Y, X], (sy, 0.0), (17.0, 19.0))
    cortex = vert & ~blob([Y, X], (sy, 0.0), (14.5, 16.5))
    disc = np.cos(Z * (2 * np.pi / 32.0) + rng.uniform(0, 6.3)) > 0.82
    vol_v = np.broadcast_to(vert, shape)
    hu[vol_v] = np.where(np.broadcast_to(disc, shape)[vol_v], 90.0, 260.0)
    hu[np.broadcast_to(cortex, shape) & ~np.broadcast_to(disc, shape)] = 750.0
    post = np.broadcast_to(blob([Y, X], (sy + 30, 0.0), (14.0, 24.0)) & ~blob([Y, X], (sy + 24, 0.0), (7.0, 7.0)), shape)
    hu[post] = 500.0
    hu[np.broadcast_to(blob([Y, X], (sy + 24, 0.0), (7.0, 7.0)), shape)] = 15.0          # spinal canal
    for s in (-1, 1):
        hu[np.broadcast_to(blob([Y, X], (sy + 28, s * 40.0), (22.0, 18.0)), shape) & ~np.broadcast_to(post, shape)] = 55.0

    # organs (label order = box order)
    liver_c = (zc * rng.uniform(0.05, 0.3), rng.uniform(-10, 5), -ax * rng.uniform(0.38, 0.48))
    liver_r = (zc * rng.uniform(0.75, 0.95), rng.uniform(60, 75), rng.uniform(62, 80))
    liver = blob([Z, Y, X], liver_c, liver_r, angle=rng.uniform(-0.3, 0.1), wobble=wob, amount=0.12) & cavity
    spleen = blob([Z, Y, X], (zc * rng.uniform(0.2, 0.45), sy - 10, ax * 0.55), (zc * 0.45, 26.0, 42.0),
                  angle=rng.uniform(0.3, 0.7), wobble=wob, amount=0.12) & cavity
    kidneys = []
    for s in (-1, 1):
        kc = (-zc * rng.uniform(0.05, 0.3), sy - 2, s * rng.uniform(58, 68))
        kr = (zc * rng.uniform(0.45, 0.6), rng.uniform(20, 25), rng.uniform(26, 32))
        k = blob([Z, Y, X], kc, kr, angle=-s * rng.uniform(0.3, 0.6), wobble=wob, amount=0.05)
        kidneys.append((k, kc, kr, s))
    ao_r = rng.uniform(8.5, 12.5)
    aorta = np.broadcast_to(blob([Y, X], (sy - 30, 14.0), (ao_r, ao_r)), shape)
    ivc = np.broadcast_to(blob([Y, X], (sy - 26, -24.0), (9.0, 13.0)), shape)

    tex = smooth_noise(rng, shape, (1, 2, 2))
    liver_hu = rng.uniform(95, 115)
    hu[liver] = liver_hu + 5 * tex[liver]
    hu[spleen] = liver_hu + rng.uniform(5, 15) + 6 * tex[spleen]
    for k, kc, kr, s in kidneys:
        medulla = blob([Z, Y, X], kc, tuple(r * 0.62 for r in kr), angle=-s * 0.45)
        sinus = blob([Z, Y, X], (kc[0], kc[1] - 3, kc[2] - s * 12), (kr[0] * 0.5, 7.0, 9.0))
        hu[k] = 175.0
        hu[k & medulla] = 120.0
        hu[k & sinus] = -60.0
    hu[ivc] = 130.0
    hu[aorta] = rng.uniform(180, 260)

    lab[liver] = 1
    lab[kidneys[0][0]] = 2
    lab[kidneys[1][0]] = 3
    lab[spleen] = 4
    lab[aorta] = 5
    # a hypodense liver lesion, nested: kept inside the liver's interior
    r_les = rng.uniform(4.5, 11.0)
    core = _erode(lab == 1, max(1, int(round(r_les / spacing[1]))))
    c = _sample_inside(rng, core & (np.abs(Z) < zc * 0.8), (Z, Y, X))
    lesion = blob([Z, Y, X], c, (max(r_les, spacing[0] * 1.1), r_les, r_les * rng.uniform(0.8, 1.2)),
                  wobble=wob, amount=0.15) & (lab == 1)
    hu[lesion] = rng.uniform(15, 45)
    lab[lesion] = 6

    names = ["liver", "right kidney", "left kidney", "spleen", "aorta", "liver lesion"]
    hu = gauss(hu, (0.4, 0.7, 0.7))
    sigma_n = rng.uniform(8, 22)
    hu += sigma_n * (0.6 * gauss(rng.standard_normal(shape).astype(np.float32), (0, 0.8, 0.8)) * 2.0
                     + 0.5 * rng.standard_normal(shape).astype(np.float32))
    level, width = rng.uniform(35, 60), rng.uniform(350, 450)
    img = to_uint8(hu, level - width / 2, level + width / 2)
    lab, names = finalize_labels(lab, names)
    return SynthCase(img, lab, names, spacing, {"window": [round(level, 1), round(width, 1)]})


_MR_TISSUE = {
    #          fat   skull  csf   gm    wm    edema core  necro lesion
    "T1":    (0.95, 0.08, 0.12, 0.50, 0.72, 0.38, 0.45, 0.18, 0.33),
    "T1c":   (0.95, 0.08, 0.12, 0.50, 0.70, 0.38, 0.97, 0.15, 0.92),
    "T2":    (0.60, 0.06, 1.00, 0.62, 0.40, 0.85, 0.68, 0.95, 0.80),
    "FLAIR": (0.55, 0.05, 0.10, 0.58, 0.45, 0.95, 0.75, 0.30, 0.88),
}


def make_mr(rng: np.random.Generator, shape: tuple[int, int, int]) -> SynthCase:
    """Brain MR: T1/T1c/T2/FLAIR-like contrast, smooth bias field, Rician noise, a tumour."""
    seq = ["T1", "T1c", "T2", "FLAIR"][int(rng.integers(4))]
    fat, skull, csf, gm, wm, edema, core_v, necro_v, lesion_v = _MR_TISSUE[seq]
    spacing = _spacing(rng, shape, (215, 250), (110, 150))
    Z, Y, X = grid(shape, spacing)
    wob = smooth_noise(rng, shape, (1.5, 5, 5))
    rz, ry, rx = rng.uniform(78, 90), rng.uniform(88, 100), rng.uniform(70, 80)
    cz = rng.uniform(-10, 10)
    head = ellipse_field([Z, Y, X], (cz, 0, 0), (rz, ry, rx))
    val = np.zeros(shape, dtype=np.float32)
    t = 1.0 / ry
    val[head < 1] = fat
    val[head < 1 - 5 * t] = skull
    val[head < 1 - 11 * t] = csf
    brain_f = ellipse_field([Z, Y, X], (cz, 0, 0), (rz - 15, ry - 15, rx - 15)) + 0.03 * wob
    brain = brain_f < 1.0
    val[brain] = wm
    sulc = smooth_noise(rng, shape, (1.2, 3.5, 3.5))
    cortex = brain & (brain_f > 0.80 + 0.05 * sulc)
    val[cortex] = gm
    val[brain & (brain_f > 0.72) & (np.abs(sulc) < 0.12)] = csf          # sulci
    val[brain & (np.abs(X) < 1.5) & (Y < -20)] = csf                        # interhemispheric fissure
    deep_gm = blob([Z, Y, X], (cz - 5, 8, 0), (14, 18, 28)) & ~blob([Z, Y, X], (cz - 5, 8, 0), (14, 14, 16))
    val[deep_gm & brain] = gm

    lab = np.zeros(shape, dtype=np.uint8)
    side = 1 if rng.random() < 0.5 else -1
    tc = (cz + rng.uniform(-15, 15), rng.uniform(-35, 30), side * rng.uniform(25, 40))
    r_ed = rng.uniform(16, 26)
    ed = blob([Z, Y, X], tc, (r_ed * 0.9, r_ed * 1.1, r_ed), angle=rng.uniform(0, 3), wobble=wob, amount=0.25) & brain
    r_c = r_ed * rng.uniform(0.35, 0.55)
    core = blob([Z, Y, X], tc, (r_c, r_c * 1.1, r_c * 0.9), wobble=wob, amount=0.15) & ed
    necro = blob([Z, Y, X], tc, (r_c * 0.5,) * 3) & core
    vshift = rng.uniform(-8, 4)
    vent = np.zeros(shape, dtype=bool)
    for s in (-1, 1):
        vent |= blob([Z, Y, X], (cz + 6, vshift, s * 7.5), (16, 26, 9.5), angle=s * 0.25, wobble=wob, amount=0.06)
    vent &= brain
    val[ed] = edema
    val[vent] = csf
    val[core] = core_v
    val[necro] = necro_v
    lab[ed] = 1
    lab[vent] = 3
    lab[core] = 2
    # a small lesion (metastasis) in the other hemisphere
    r_m = rng.uniform(5.0, 8.0)
    far = brain & (lab == 0) & (side * X < -15) & (brain_f < 0.85)
    mc = _sample_inside(rng, _erode(far, 2), (Z, Y, X))
    met = blob([Z, Y, X], mc, (max(r_m, spacing[0] * 1.2), r_m, r_m)) & brain & (lab == 0)
    val[met] = lesion_v
    lab[met] = 4
    names = ["peritumoral edema", "tumor core", "lateral ventricles", "metastasis"]

    val = gauss(val, (0.5, 0.6, 0.6))
    # smooth multiplicative bias field (coil inhomogeneity) and a gradient across the head
    bias = np.exp(rng.uniform(0.2, 0.45) * smooth_noise(rng, shape, (shape[0] / 2.5, shape[1] / 3.0, shape[2] / 3.0))
                  + rng.uniform(-0.25, 0.25) * (Y / ry) + rng.uniform(-0.2, 0.2) * (X / rx))
    val = val * bias.astype(np.float32)
    sn = rng.uniform(0.015, 0.05)
    n1 = rng.standard_normal(shape).astype(np.float32) * sn
    n2 = rng.standard_normal(shape).astype(np.float32) * sn
    mag = np.sqrt((val + n1) ** 2 + n2 ** 2)
    mag = mag ** np.float32(rng.uniform(0.8, 1.25))
    img = to_uint8(mag, 0.0, float(np.percentile(mag, 99.7)) * rng.uniform(0.95, 1.15))
    lab, names = finalize_labels(lab, names)
    return SynthCase(img, lab, names, spacing, {"sequence": seq})


def make_pet(rng: np.random.Generator, shape: tuple[int, int, int]) -> SynthCase:
    """FDG-PET of the torso: coarse voxels, ~7 mm FWHM blur, Poisson noise, hot lesions."""
    spacing = _spacing(rng, shape, (540, 620), (120, 170))
    Z, Y, X = grid(shape, spacing)
    zc = shape[0] * spacing[0] / 2
    wob = smooth_noise(rng, shape, (1.5, 3, 3))
    suv = np.zeros(shape, dtype=np.float32)
    ax, ay = rng.uniform(150, 185), rng.uniform(105, 125)
    body = np.broadcast_to(blob([Y, X], (8.0, 0.0), (ay, ax), wobble=wob, amount=0.03), shape)
    suv[body] = 0.55
    arms = np.zeros(shape, dtype=bool)
    for s in (-1, 1):
        arms |= np.broadcast_to(blob([Y, X], (0.0, s * (ax + 45)), (45.0, 35.0)), shape)
    suv[arms] = 0.45
    lungs = np.zeros(shape, dtype=bool)
    for s in (-1, 1):
        lungs |= blob([Z, Y, X], (zc * 0.9, 0.0, s * ax * 0.45), (zc * 1.1, ay * 0.7, ax * 0.38), wobble=wob, amount=0.06)
    lungs &= body
    suv[lungs] = 0.25
    spine = np.broadcast_to(blob([Y, X], (ay * 0.6, 0.0), (16.0, 16.0)), shape)
    suv[spine] = 1.6
    heart = blob([Z, Y, X], (zc * 0.75, -25.0, 30.0), (45.0, 48.0, 55.0), angle=0.5)
    heart_in = blob([Z, Y, X], (zc * 0.75, -25.0, 30.0), (30.0, 32.0, 38.0), angle=0.5)
    suv[heart & body] = rng.uniform(3.0, 7.0)
    suv[heart_in & body] = 1.2
    liver = blob([Z, Y, X], (-zc * rng.uniform(0.2, 0.5), rng.uniform(-5, 10), -ax * 0.42),
                 (zc * 0.9, 70.0, 80.0), angle=-0.2, wobble=wob, amount=0.1) & body & ~lungs
    liver_suv = rng.uniform(2.0, 2.8)
    suv[liver] = liver_suv
    lab = np.zeros(shape, dtype=np.uint8)
    lab[liver] = 1
    # hot lesions: one in the liver (nested), one in a lung, one small lymph node
    r1 = rng.uniform(7, 14)
    c1 = _sample_inside(rng, _erode(liver, 2), (Z, Y, X))
    l1 = blob([Z, Y, X], c1, (max(r1, spacing[0]), r1, r1), wobble=wob, amount=0.1) & liver
    r2 = rng.uniform(8, 14)
    c2 = _sample_inside(rng, _erode(lungs, 2) & (lab == 0), (Z, Y, X))
    l2 = blob([Z, Y, X], c2, (max(r2, spacing[0]), r2, r2), wobble=wob, amount=0.1) & body & (lab == 0)
    r3 = rng.uniform(9, 13)
    free = body & ~lungs & (lab == 0) & ~spine & (np.abs(X) < 70) & (np.abs(Z) < zc * 0.7) & ~(l2 | heart)
    c3 = _sample_inside(rng, _erode(free, 2), (Z, Y, X))
    l3 = blob([Z, Y, X], c3, (max(r3, spacing[0] * 1.2), r3, r3)) & body & (lab == 0)
    for m, v, k in ((l1, rng.uniform(5, 12), 2), (l2, rng.uniform(4, 10), 3), (l3, rng.uniform(3.5, 8), 4)):
        suv[m] = v
        lab[m] = k
    names = ["liver", "liver lesion", "lung lesion", "lymph node"]
    suv += 0.15 * smooth_noise(rng, shape, (1, 2, 2)) * (suv > 0.3)
    fwhm = rng.uniform(6.0, 8.0)
    suv = gauss(np.clip(suv, 0, None), tuple(fwhm / 2.355 / s for s in spacing))
    counts_per_suv = rng.uniform(6, 14)
    suv = rng.poisson(np.clip(suv, 0, None) * counts_per_suv).astype(np.float32) / np.float32(counts_per_suv)
    suv = gauss(suv, (0.4, 0.5, 0.5))
    img = to_uint8(np.sqrt(np.clip(suv, 0, None)), 0.0, float(np.sqrt(rng.uniform(5.0, 8.0))))
    lab, names = finalize_labels(lab, names)
    return SynthCase(img, lab, names, spacing, {"fwhm_mm": round(fwhm, 2)})
