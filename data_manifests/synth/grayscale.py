"""2D grayscale modalities ``(H, W)``: ultrasound, chest X-ray, retinal OCT, mammography.

All coordinates are pixels; ``y`` is the row (depth for US and OCT), ``x`` the column.
"""

from __future__ import annotations

import numpy as np

from ._common import (
    RegenerateCase, SynthCase, blob, ellipse_field, finalize_labels, gauss, grid, smooth_noise, speckle, stamp_polyline, to_uint8,
)

__all__ = ["make_us", "make_xray", "make_oct", "make_mammography"]


def make_us(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Thyroid ultrasound: linear or curvilinear probe, speckle, shadowing and enhancement."""
    h, w = shape
    Y, X = grid(shape, center=False)
    Y = np.broadcast_to(Y, shape)
    X = np.broadcast_to(X, shape)
    curved = rng.random() < 0.5
    if curved:
        ay, axc = -rng.uniform(0.5, 0.9) * h, w / 2 + rng.uniform(-0.02, 0.02) * w
        R = np.hypot(Y - ay, X - axc)
        TH = np.arctan2(X - axc, Y - ay)
        r0 = -ay + 0.02 * h
        depth = R - r0
        lateral = TH * (r0 + 0.5 * h)
        half = rng.uniform(0.35, 0.5)
        fan = (np.abs(TH) < half) & (depth > 0) & (depth < 0.96 * h)
    else:
        top, margin = 0.03 * h, rng.uniform(0.04, 0.1) * w
        depth = Y - top
        lateral = X - w / 2
        fan = (depth > 0) & (np.abs(lateral) < w / 2 - margin) & (depth < 0.96 * h)
    lab = np.zeros(shape, dtype=np.uint8)
    tex = smooth_noise(rng, shape, 6)
    echo = 0.42 + 0.06 * tex
    echo = np.where(depth < 3, 0.95, echo)
    fat = (depth >= 3) & (depth < 0.07 * h)
    echo = np.where(fat, 0.28 + 0.25 * (np.abs(smooth_noise(rng, shape, (1.0, 6))) < 0.15), echo)
    muscle = (depth >= 0.07 * h) & (depth < 0.2 * h)
    echo = np.where(muscle, 0.32 + 0.12 * np.sin(depth * 0.9 + 2 * smooth_noise(rng, shape, (3, 12))), echo)

    side = 1 if rng.random() < 0.5 else -1
    tc = (rng.uniform(0.4, 0.5) * h, side * rng.uniform(0.0, 0.08) * w)
    tr = (rng.uniform(0.14, 0.2) * h, rng.uniform(0.24, 0.3) * w)
    wob = smooth_noise(rng, shape, 8)
    thyroid = blob([depth, lateral], tc, tr, angle=rng.uniform(-0.2, 0.2), wobble=wob, amount=0.06) & fan
    echo = np.where(thyroid, 0.78 + 0.05 * tex, echo)
    lab[thyroid] = 1
    # carotid artery: anechoic circle touching the lobe's lateral border
    cr = rng.uniform(0.06, 0.085) * w
    cc_lat = tc[1] + side * (tr[1] * 0.92 + cr * 0.9)
    cc_lat = float(np.clip(cc_lat, -0.36 * w + cr, 0.36 * w - cr))
    cc = (tc[0] + rng.uniform(-0.2, 0.3) * tr[0], cc_lat)
    artery_f = ellipse_field([depth, lateral], cc, (cr * 0.95, cr))
    artery = (artery_f < 1) & fan
    echo = np.where((artery_f >= 1) & (artery_f < 1.15), 0.85, echo)
    echo = np.where(artery, 0.02, echo)
    # nodule nested in the lobe: hypoechoic, sometimes with a calcification
    nr = rng.uniform(0.035, 0.08) * h
    core = thyroid & (ellipse_field([depth, lateral], tc, (tr[0] - nr * 1.3, tr[1] - nr * 1.3)) < 1)
    idx = np.flatnonzero(core)
    if idx.size == 0:
        raise RegenerateCase("thyroid too small for a nodule")
    k = int(idx[rng.integers(idx.size)])
    nc = (float(depth.ravel()[k]), float(lateral.ravel()[k]))
    nod_f = ellipse_field([depth, lateral], nc, (nr, nr * rng.uniform(1.0, 1.5)), rng.uniform(0, 3)) + 0.1 * wob
    nodule = (nod_f < 1) & thyroid
    echo = np.where(nodule, 0.18 + 0.05 * tex, echo)
    echo = np.where(thyroid & (nod_f >= 1) & (nod_f < 1.12), 0.1, echo)    # halo
    calc = nodule & (rng.random() < 0.6) & (ellipse_field([depth, lateral], (nc[0] - nr * 0.3, nc[1]), (2.2, 2.2)) < 1)
    echo = np.where(calc, 1.0, echo)
    lab[artery] = 3
    lab[nodule] = 2
    names = ["thyroid lobe", "thyroid nodule", "carotid artery"]

    # posterior effects along the beam: enhancement behind the vessel, shadows behind calcification
    # and the trachea (a bright arc at the medial end)
    gain = np.ones(shape, dtype=np.float32)
    behind_artery = (np.abs(lateral - cc[1]) < cr * 0.8) & (depth > cc[0] + cr)
    gain = np.where(behind_artery, 1.45, gain)
    if calc.any():
        gain = np.where((np.abs(lateral - nc[1]) < 3.0) & (depth > nc[0] - nr * 0.3), 0.25, gain)
    tra_lat = float(np.clip(tc[1] - side * (tr[1] + 0.04 * w), -0.42 * w, 0.42 * w))
    tra_y = tc[0] - 0.1 * h + 0.004 * (lateral - tra_lat) ** 2 / max(1.0, 0.01 * w)
    tra = (np.abs(lateral - tra_lat) < 0.06 * w) & (np.abs(depth - tra_y) < 2.0)
    echo = np.where(tra, 1.0, echo)
    gain = np.where((np.abs(lateral - tra_lat) < 0.06 * w) & (depth > tra_y + 2.0),
                    0.15 + 0.1 * (np.sin(depth * 0.35) > 0.7), gain)
    gain = gauss(gain, 1.5)
    env = echo * gain * speckle(rng, shape, sigma=(0.7, 1.3) if not curved else (1.0, 1.0))
    env *= np.exp(-rng.uniform(0.6, 1.4) * depth / h) * (1 + 0.1 * np.sin(depth / h * 7 + rng.uniform(0, 6)))
    img = np.log1p(8.0 * np.clip(env, 0, None)) / np.log1p(8.0 * 1.6)
    img = np.where(fan, img, 0.0)
    out = to_uint8(img, 0.0, 1.0)
    # depth scale marks on the right, as scanners print them
    for d in range(int(0.1 * h), h, max(8, h // 10)):
        out[d : d + 2, w - 6 : w - 3] = 200
    lab[~fan] = 0
    lab, names = finalize_labels(lab, names)
    return SynthCase(out, lab, names, (1.0, 1.0), {"probe": "curvilinear" if curved else "linear"})


def make_xray(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Chest radiograph (PA): lungs, heart, ribs, clavicles, spine, and a lung nodule."""
    h, w = shape
    Y, X = grid(shape, center=False)
    wob = smooth_noise(rng, shape, 10)
    dens = np.full(shape, 0.06, dtype=np.float32)
    body = blob([Y, X], (0.62 * h, 0.5 * w), (0.75 * h, 0.47 * w), wobble=wob, amount=0.02)
    dens = np.where(body, 0.55, dens)
    neck = (np.abs(X - 0.5 * w) < 0.13 * w) & (0.2 * h > Y)
    dens = np.where(neck, 0.55, dens)
    lungs = []
    ltop = rng.uniform(0.12, 0.18) * h
    lbot = rng.uniform(0.75, 0.85) * h
    for s in (-1, 1):
        cx = 0.5 * w + s * rng.uniform(0.2, 0.24) * w
        rx = rng.uniform(0.15, 0.18) * w
        cy = (ltop + lbot) / 2
        ry = (lbot - ltop) / 2
        f = ellipse_field([Y, X], (cy, cx), (ry, rx), angle=s * rng.uniform(0.03, 0.1)) + 0.04 * wob
        lung = (f < 1) & (np.abs(X - 0.5 * w) > 0.06 * w) & (lbot - 0.06 * h * np.cos((X - cx) / rx) > Y)
        lungs.append(lung)
    heart = blob([Y, X], (rng.uniform(0.6, 0.66) * h, 0.5 * w + rng.uniform(0.03, 0.07) * w),
                 (rng.uniform(0.14, 0.17) * h, rng.uniform(0.15, 0.19) * w), angle=0.5, wobble=wob, amount=0.03)
    vessels = (np.abs(smooth_noise(rng, shape, 2.5)) < 0.12) * np.exp(-np.abs(X - 0.5 * w) / (0.18 * w))
    for lung in lungs:
        dens = np.where(lung, 0.16 + 0.1 * vessels + 0.03 * wob, dens)
    dens = np.where(heart & body, 0.5 + 0.04 * wob, dens)
    spine = np.abs(X - 0.5 * w) < 0.045 * w
    dens = np.where(spine & body, 0.68 + 0.05 * (np.sin(Y / h * 60) > 0.6), dens)
    bone = np.zeros(shape, dtype=np.float32)
    for s in (-1, 1):
        for k in range(9):
            y0 = ltop + k * (lbot - ltop) / 8.5 - 0.02 * h
            t = np.linspace(0, 1, 60)
            xs = 0.5 * w + s * (0.05 * w + t * 0.38 * w)
            ys = y0 - 0.03 * h * np.sin(t * np.pi * 0.8) + t * t * 0.12 * h
            stamp_polyline(shape, np.stack([ys, xs], 1), np.full(60, 0.011 * h), out=bone)
        t = np.linspace(0, 1, 50)
        xs = 0.5 * w + s * (0.04 * w + t * 0.3 * w)
        ys = ltop + 0.01 * h - t * 0.04 * h + 0.03 * h * t * t
        stamp_polyline(shape, np.stack([ys, xs], 1), np.full(50, 0.014 * h), out=bone)
    dens = dens + gauss(bone, 0.8) * body * np.where(heart | spine, 0.05, 0.12)
    lab = np.zeros(shape, dtype=np.uint8)
    lab[lungs[0] & ~heart] = 1
    lab[lungs[1] & ~heart] = 2
    lab[heart & body] = 3
    # nodule inside one lung (nested)
    which = int(rng.integers(2)) + 1
    nr = rng.uniform(0.012, 0.025) * w
    from scipy import ndimage
    inner = ndimage.binary_erosion(lab == which, iterations=int(nr) + 2)
    idx = np.flatnonzero(inner)
    if idx.size == 0:
        raise RegenerateCase("no room for a nodule")
    k = int(idx[rng.integers(idx.size)])
    nod = blob([Y, X], np.unravel_index(k, shape), (nr, nr), wobble=wob, amount=0.05) & (lab == which)
    dens = np.where(nod, dens + 0.2, dens)
    lab[nod] = 4
    names = ["right lung", "left lung", "heart", "lung nodule"]
    dens = gauss(dens, 1.0) + 0.015 * rng.standard_normal(shape).astype(np.float32)
    dens = np.clip(dens, 0.0, None) ** np.float32(rng.uniform(0.8, 1.2))
    img = to_uint8(dens, pct=(0.2, 99.8))
    lab, names = finalize_labels(lab, names)
    return SynthCase(img, lab, names, (1.0, 1.0))


#          name              thickness  reflect.  thinning at the fovea (negative = thicker)
_OCT_LAYERS = [
    ("retinal nerve fiber layer", 0.030, 0.85, 0.95),
    ("ganglion cell-inner plexiform layer", 0.060, 0.55, 0.9),
    ("inner nuclear layer", 0.032, 0.25, 0.7),
    ("outer plexiform layer", 0.020, 0.60, 0.4),
    ("outer nuclear layer", 0.070, 0.14, -0.4),
    (None, 0.012, 0.85, 0.0),        # ellipsoid zone (unlabelled)
    (None, 0.016, 0.35, 0.0),        # photoreceptor outer segments (unlabelled)
    ("retinal pigment epithelium", 0.020, 0.95, 0.0),
]


def make_oct(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Macular OCT B-scan: curved retinal layers with a foveal pit, speckle, intraretinal fluid."""
    h, w = shape
    x = np.arange(w, dtype=np.float32)
    xf = rng.uniform(0.4, 0.6) * w
    pit = np.exp(-(((x - xf) / (rng.uniform(0.07, 0.11) * w)) ** 2))
    scale = h * rng.uniform(1.4, 1.7)
    rpe_base = (rng.uniform(0.55, 0.65) * h + rng.uniform(0.05, 0.15) * h * ((x - w / 2) / (w / 2)) ** 2
                + rng.uniform(-0.05, 0.05) * h * (x / w - 0.5) + 0.015 * h * smooth_noise(rng, (w,), 30))
    nasal_sign = 1.0 if rng.random() < 0.5 else -1.0
    thicks = []
    for i, (_name, t, _r, thin) in enumerate(_OCT_LAYERS):
        th = t * scale * (1 - thin * pit)
        if i == 0:
            th = th * (1.0 + 0.8 * np.clip(nasal_sign * (x - xf) / (w / 2), 0, 1))
        th = th * (1 + 0.08 * smooth_noise(rng, (w,), 15))
        thicks.append(np.maximum(th, 0.3 if thin > 0.8 else 1.0))
    b = rpe_base - np.sum(thicks, axis=0)
    Y = np.arange(h, dtype=np.float32)[:, None]
    refl = np.full(shape, 0.03, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    names: list[str] = []
    value = 0
    for (name, _t, r, _thin), thick in zip(_OCT_LAYERS, thicks):
        lower = b + thick
        band = (b[None, :] <= Y) & (lower[None, :] > Y)
        refl = np.where(band, r * (1 + 0.1 * np.sin(Y * 0.0 + x[None, :] * 0.0)), refl)
        if name:
            value += 1
            lab[band] = value
            names.append(name)
        b = lower
    chor = (b[None, :] <= Y) & (b[None, :] + 0.2 * h > Y)
    ctex = 0.45 + 0.25 * smooth_noise(rng, shape, (3, 6))
    fade = np.exp(-np.clip(Y - b[None, :], 0, None) / (0.12 * h))
    refl = np.where(b[None, :] <= Y, ctex * fade + 0.03, refl)
    refl = np.where(chor & (smooth_noise(rng, shape, (4, 10)) > 1.0), 0.08, refl)
    # the fovea's inner layers nearly vanish: keep labels only where the layer is ≥ 1 px thick
    # intraretinal fluid: dark cyst in the INL/ONL region (nested, small)
    region = (lab == 3) | (lab == 5)
    cols = np.flatnonzero(region.any(axis=0))
    if cols.size == 0:
        raise RegenerateCase("no room for fluid")
    cx = float(cols[rng.integers(cols.size)])
    rows = np.flatnonzero(region[:, int(cx)])
    cy = float(rows[len(rows) // 2])
    Yg, Xg = grid(shape, center=False)
    cyst = blob([Yg, Xg], (cy, cx), (rng.uniform(3.0, 6.0), rng.uniform(5.0, 12.0))) & ((lab >= 3) & (lab <= 5))
    refl = np.where(cyst, 0.02, refl)
    lab[cyst] = value + 1
    names.append("intraretinal fluid")
    env = np.clip(refl, 0.0, None) * speckle(rng, shape, sigma=(0.7, 1.3))
    env = env * (1 - 0.35 * np.clip(np.abs(np.arange(w) - w / 2) / (w / 2), 0, 1) ** 2)[None, :]
    img = np.log1p(20 * env) / np.log1p(20 * 1.4)
    img = img + 0.04 * rng.standard_normal(shape).astype(np.float32)
    out = to_uint8(img, 0.05, rng.uniform(0.85, 1.0))
    lab, names = finalize_labels(lab, names, min_voxels=12)
    return SynthCase(out, lab, names, (1.0, 1.0))


def make_mammography(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """MLO mammogram: breast with fibroglandular texture, pectoral muscle, mass and axillary node."""
    h, w = shape
    Y, X = grid(shape, center=False)
    flip = rng.random() < 0.5
    wob = smooth_noise(rng, shape, 12)
    yc, ry = rng.uniform(0.45, 0.55) * h, rng.uniform(0.45, 0.52) * h
    depth = rng.uniform(0.6, 0.8) * w
    f = ellipse_field([Y, X], (yc, 0.0), (ry, depth)) + 0.02 * wob
    breast = f < 1
    dens = np.where(breast, 0.3, 0.02).astype(np.float32)
    # fibroglandular tissue, denser in the centre, streaming towards the nipple
    fib = smooth_noise(rng, shape, (3, 9), octaves=3)
    amount = np.clip((rng.uniform(0.8, 0.95) - f) * 4, 0, 1) * (1 / (1 + np.exp(-2.5 * (fib - rng.uniform(-0.5, 0.3)))))
    dens = np.where(breast, 0.28 + 0.3 * amount + 0.03 * smooth_noise(rng, shape, 1.2), dens)
    dens = np.where(breast & (f > 0.9), dens * 0.8, dens)
    lab = np.zeros(shape, dtype=np.uint8)
    pa, pb = rng.uniform(0.2, 0.3) * w, rng.uniform(0.45, 0.65) * h
    pect = (X / pa + Y / pb < 1) & breast
    dens = np.where(pect, 0.7 + 0.05 * wob, dens)
    # mass: irregular, spiculated
    mr = rng.uniform(0.03, 0.07) * min(h, w)
    cand = breast & ~pect & (f < 0.7) & (pa * 0.8 < X)
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        raise RegenerateCase("no room for a mass")
    k = int(idx[rng.integers(idx.size)])
    mc = np.unravel_index(k, shape)
    spic = smooth_noise(rng, shape, 1.5)
    mass = blob([Y, X], mc, (mr, mr * rng.uniform(0.8, 1.3)), wobble=spic, amount=0.25) & breast & ~pect
    dens = np.where(mass, 0.6 + 0.04 * spic, dens)
    for a in rng.uniform(0, 2 * np.pi, size=int(rng.integers(5, 10))):
        ln = mr * rng.uniform(1.6, 2.6)
        t = np.linspace(0.6, 1, 20)
        pts = np.stack([mc[0] + np.sin(a) * ln * t, mc[1] + np.cos(a) * ln * t], 1)
        spi = stamp_polyline(shape, pts, np.linspace(1.2, 0.4, 20))
        dens = np.maximum(dens, (0.5 * spi) * breast)
    # axillary lymph node near the pectoral muscle: oval with a fatty hilum
    nr = rng.uniform(0.015, 0.03) * min(h, w)
    ny = pb * rng.uniform(0.35, 0.6)
    nc = (ny, pa * (1 - ny / pb) + nr * 2.2 + rng.uniform(0, 0.04) * w)
    node = blob([Y, X], nc, (nr, nr * 1.5), angle=0.6) & breast & ~mass & ~pect
    dens = np.where(node, 0.65, dens)
    dens = np.where(blob([Y, X], nc, (nr * 0.4, nr * 0.7), angle=0.6), 0.3, dens)
    lab[pect] = 1
    lab[mass] = 2
    lab[node] = 3
    names = ["pectoral muscle", "mass", "axillary lymph node"]
    dens = gauss(dens, 0.8) + 0.01 * rng.standard_normal(shape).astype(np.float32)
    img = to_uint8(dens, 0.0, 0.85)
    if flip:
        img, lab = img[:, ::-1].copy(), lab[:, ::-1].copy()
    lab, names = finalize_labels(lab, names)
    return SynthCase(img, lab, names, (1.0, 1.0), {"side": "R" if flip else "L"})
