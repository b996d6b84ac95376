"""2D colour modalities ``(H, W, 3)``: endoscopy, fundus, microscopy, dermoscopy."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._common import (
    RegenerateCase, SynthCase, blob, ellipse_field, finalize_labels, gauss, grid, random_walk,
    smooth_noise, stamp_polyline,
)

__all__ = ["make_endoscopy", "make_fundus", "make_microscopy", "make_dermoscopy"]


def _rgb_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _pick(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int]:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise RegenerateCase("no room to place a structure")
    y, x = (int(v) for v in np.unravel_index(int(idx[rng.integers(idx.size)]), mask.shape))
    return y, x


def _shade(height: np.ndarray, light: tuple[float, float, float] = (-0.6, -0.5, 0.62)) -> np.ndarray:
    """Lambertian shading of a height map (unit light vector in (y, x, z))."""
    gy, gx = np.gradient(height)
    n = np.sqrt(gx * gx + gy * gy + 1.0)
    ly, lx, lz = light
    out: np.ndarray = np.clip((-gy * ly - gx * lx + lz) / n, 0, 1)
    return out


def make_endoscopy(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Colonoscopy frame: mucosa with vessels and folds, dark lumen, polyps, highlights, a tool."""
    h, w = shape
    Y, X = grid(shape, center=False)
    Y = np.broadcast_to(Y, shape).astype(np.float32)
    X = np.broadcast_to(X, shape).astype(np.float32)
    m = min(h, w)
    ly, lx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    rho = np.hypot(Y - ly, X - lx) / m
    wob = smooth_noise(rng, shape, 10)
    # folds: rings around the lumen, bent by noise
    folds = np.sin(np.log(rho + 0.03) * rng.uniform(9, 13) + 1.5 * wob)
    height = 0.05 * m * (0.5 + 0.5 * folds)
    bright = np.clip(rho * rng.uniform(1.6, 2.2), 0.04, 1.0) ** 0.8
    base = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.42, 0.52), rng.uniform(0.36, 0.46)], dtype=np.float32)
    fine = smooth_noise(rng, shape, 1.2)
    vess = np.clip(1 - np.abs(smooth_noise(rng, shape, 7, octaves=2)) / 0.05, 0, 1) * (rho > 0.12)
    lab = np.zeros(shape, dtype=np.uint8)
    # polyp 1 (medium-large) and polyp 2 (diminutive); polyps are raised: add to the height map
    names = []
    away = rho > 0.22
    for k, (r_lo, r_hi) in enumerate(((0.09, 0.17), (0.025, 0.045))):
        r = rng.uniform(r_lo, r_hi) * m
        inside = away & (r < Y) & (h - r > Y) & (r < X) & (w - r > X) & (lab == 0)
        if k == 0:
            inside = ndimage.binary_erosion(inside, iterations=int(r) + 2)
        else:
            inside = inside & ~ndimage.binary_dilation(lab > 0, iterations=int(r) + 3)
        c = _pick(rng, inside)
        f = ellipse_field([Y, X], c, (r, r * rng.uniform(0.8, 1.25)), rng.uniform(0, 3)) + 0.12 * wob
        p = f < 1
        height = height + np.where(p, 0.5 * r * np.sqrt(np.clip(1 - f * f, 0, 1)), 0)
        lab[p] = k + 1
        names.append("polyp" if k == 0 else "small polyp")
    has_tool = rng.random() < 0.6
    tool = np.zeros(shape, dtype=bool)
    if has_tool:
        side = int(rng.integers(4))
        ang = rng.uniform(-0.4, 0.4) + [np.pi / 2, -np.pi / 2, 0.0, np.pi][side]
        start = [(0.0, rng.uniform(0.2, 0.8) * w), (h - 1.0, rng.uniform(0.2, 0.8) * w),
                 (rng.uniform(0.2, 0.8) * h, 0.0), (rng.uniform(0.2, 0.8) * h, w - 1.0)][side]
        ln = rng.uniform(0.25, 0.4) * m
        t = np.linspace(0, 1, 40)
        pts = np.stack([start[0] + np.sin(ang) * ln * t, start[1] + np.cos(ang) * ln * t], 1)
        tw = rng.uniform(0.035, 0.055) * m
        tool = stamp_polyline(shape, pts, np.full(40, tw)) > 0.5
        if tool.sum() < 20:
            has_tool = False
    shade = _shade(gauss(height, 3.0))
    rgb = base[None, None, :] * (0.85 + 0.1 * fine)[..., None]
    rgb = rgb * (1 - 0.45 * vess)[..., None] + np.array([0.1, -0.05, -0.05], dtype=np.float32) * vess[..., None]
    pol = lab > 0
    rgb = np.where(pol[..., None], rgb * np.array([1.03, 1.0, 1.05], dtype=np.float32) + 0.04 * fine[..., None], rgb)
    light = (0.45 + 0.75 * shade) * bright
    rgb = rgb * light[..., None]
    if has_tool:
        tool_f = gauss(tool.astype(np.float32), 1.0)
        lat = np.clip(tool_f * 2 - 0.5, 0, 1)
        metal = (0.45 + 0.45 * lat)[..., None] * np.array([0.75, 0.77, 0.8], dtype=np.float32)
        rgb = np.where(tool[..., None], metal, rgb)
        lab[tool] = 3
        names.append("instrument")
    # specular highlights where the surface faces the light
    spec = (smooth_noise(rng, shape, 1.0) > 2.0) & (shade > 0.75) & (bright > 0.4)
    rgb = np.where(spec[..., None], 1.0, rgb)
    rgb = gauss(rgb, (0.7, 0.7, 0))
    # the endoscope's field of view: an octagon (cut corners)
    cut = (np.minimum(Y, h - 1 - Y) + np.minimum(X, w - 1 - X)) < 0.18 * m
    rgb[cut] = 0.0
    lab[cut] = 0
    rgb = rgb + 0.012 * np.random.default_rng(rng.integers(2**32)).standard_normal(rgb.shape).astype(np.float32)
    lab, names = finalize_labels(lab, names)
    return SynthCase(_rgb_u8(rgb), lab, names, (1.0, 1.0), {"instrument": bool(has_tool)})


def make_fundus(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Colour fundus photo: orange retina, vessel tree from the disc, disc with nested cup, macula."""
    h, w = shape
    Y, X = grid(shape, center=False)
    Y = np.broadcast_to(Y, shape).astype(np.float32)
    X = np.broadcast_to(X, shape).astype(np.float32)
    cy, cx = h / 2, w / 2
    R = 0.47 * min(h, w)
    r = np.hypot(Y - cy, X - cx) / R
    fov = r < 1
    eye = 1 if rng.random() < 0.5 else -1                  # disc to the right or left of the centre
    dy, dx = cy + rng.uniform(-0.08, 0.08) * R, cx + eye * rng.uniform(0.3, 0.42) * R
    rd = rng.uniform(0.13, 0.17) * R
    my, mx = cy + rng.uniform(-0.05, 0.05) * R, dx - eye * 2.3 * rd * 1.1
    base = np.array([rng.uniform(0.75, 0.88), rng.uniform(0.3, 0.4), rng.uniform(0.08, 0.16)], dtype=np.float32)
    tex = smooth_noise(rng, shape, 2.5)
    big = smooth_noise(rng, shape, 25)
    rgb = base[None, None, :] * (1 + 0.05 * tex + 0.08 * big)[..., None]
    vign = 1 - 0.5 * np.clip(r, 0, 1) ** 3
    dm = np.hypot(Y - my, X - mx) / R
    rgb = rgb * (vign * (1 - 0.4 * np.exp(-(dm / 0.16) ** 2)))[..., None]
    # vessels: 4 arcades from the disc, each with a few branches
    vmask = np.zeros(shape, dtype=np.float32)
    for ang0, bend0 in ((-np.pi / 2 - eye * 0.5, eye * 0.018), (np.pi / 2 + eye * 0.5, -eye * 0.018),
                        (-np.pi / 2 + eye * 0.9, -eye * 0.01), (np.pi / 2 - eye * 0.9, eye * 0.01)):
        ang = ang0 + (np.pi if eye < 0 else 0.0) * 0 + rng.uniform(-0.2, 0.2)
        bend = bend0
        if eye < 0:
            ang = np.pi - ang
            bend = -bend
        n = 70
        pts = random_walk(rng, (dy, dx), ang, n, R * 0.016, 0.03, bend=bend)
        rad = np.linspace(0.012 * R, 0.004 * R, n)
        stamp_polyline(shape, pts, rad, out=vmask)
        for j in rng.integers(10, 50, size=3):
            a = ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)
            bp = random_walk(rng, tuple(pts[j]), a, 40, R * 0.014, 0.05)
            stamp_polyline(shape, bp, np.linspace(rad[j] * 0.7, 0.003 * R, 40), out=vmask)
    vmask = np.clip(vmask, 0, 1)
    rgb = rgb * (1 - vmask[..., None] * np.array([0.45, 0.65, 0.55], dtype=np.float32))
    # optic disc and nested cup
    dwob = smooth_noise(rng, shape, 3)
    disc_f = ellipse_field([Y, X], (dy, dx), (rd * rng.uniform(1.0, 1.15), rd)) + 0.04 * dwob
    disc = disc_f < 1
    cdr = rng.uniform(0.35, 0.7)
    cup_f = ellipse_field([Y, X], (dy, dx - eye * 0.1 * rd), (rd * cdr * 1.1, rd * cdr)) + 0.05 * dwob
    cup = cup_f < 1
    glow = np.exp(-np.clip(disc_f - 0.6, 0, None) ** 2 / 0.08)
    disc_col = np.array([0.98, 0.72, 0.45], dtype=np.float32)
    cup_col = np.array([1.0, 0.93, 0.78], dtype=np.float32)
    rgb = rgb * (1 - 0.7 * glow[..., None]) + disc_col * (0.7 * glow[..., None]) * (1 - 0.5 * vmask[..., None])
    cupw = np.clip(1.2 - cup_f, 0, 1)[..., None]
    rgb = rgb * (1 - 0.8 * cupw) + cup_col * 0.8 * cupw
    lab = np.zeros(shape, dtype=np.uint8)
    lab[disc & fov] = 1
    lab[cup & fov] = 2
    # a lesion: haemorrhage (dark red) or hard exudate (yellow), small, away from the disc
    kind = "hemorrhage" if rng.random() < 0.5 else "hard exudate"
    lr = rng.uniform(0.025, 0.05) * R
    ok = (r < 0.75) & (np.hypot(Y - dy, X - dx) > 2 * rd) & (dm > 0.1)
    c = _pick(rng, ok)
    les = blob([Y, X], c, (lr, lr * rng.uniform(0.7, 1.4)), angle=rng.uniform(0, 3), wobble=dwob, amount=0.2)
    col = np.array([0.45, 0.08, 0.05] if kind == "hemorrhage" else [0.95, 0.85, 0.35], dtype=np.float32)
    rgb = np.where(les[..., None], rgb * 0.3 + col * 0.7, rgb)
    lab[les] = 3
    names = ["optic disc", "optic cup", kind]
    rgb = gauss(rgb, (0.6, 0.6, 0)) + 0.01 * rng.standard_normal((h, w, 3)).astype(np.float32)
    rgb[~fov] = 0.0
    lab[~fov] = 0
    lab, names = finalize_labels(lab, names)
    return SynthCase(_rgb_u8(rgb), lab, names, (1.0, 1.0), {"eye": "OD" if eye > 0 else "OS"})


def make_microscopy(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Cell image, H&E-like brightfield or two-channel fluorescence; a few cells are labelled."""
    h, w = shape
    Y, X = grid(shape, center=False)
    Y = np.broadcast_to(Y, shape).astype(np.float32)
    X = np.broadcast_to(X, shape).astype(np.float32)
    m = min(h, w)
    fluo = rng.random() < 0.4
    wob = smooth_noise(rng, shape, 2.0)
    # place cells by rejection: (y, x, radius)
    cells: list[tuple[float, float, float]] = []
    n_lab = int(rng.integers(4, 7))
    radii = [rng.uniform(0.075, 0.1) * m, rng.uniform(0.018, 0.025) * m] + list(rng.uniform(0.03, 0.06, size=n_lab - 2) * m)
    for i, r in enumerate(radii):
        for _ in range(200):
            if i == 2:          # touching pair: cell 3 placed against cell 1
                a = rng.uniform(0, 2 * np.pi)
                y0, x0, r0 = cells[0]
                y, x = y0 + np.sin(a) * (r0 + r) * 0.97, x0 + np.cos(a) * (r0 + r) * 0.97
            else:
                y, x = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
            if not (r + 2 < y < h - r - 2 and r + 2 < x < w - r - 2):
                continue
            if all(np.hypot(y - cy, x - cx) > (r + cr) * (0.9 if i == 2 and j == 0 else 1.15)
                   for j, (cy, cx, cr) in enumerate(cells)):
                cells.append((y, x, r))
                break
        else:
            raise RegenerateCase("could not place the labelled cells")
    for _ in range(int(rng.integers(25, 45))):
        r = rng.uniform(0.025, 0.05) * m
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        if all(np.hypot(y - cy, x - cx) > (r + cr) * 1.05 for cy, cx, cr in cells):
            cells.append((y, x, r))
    lab = np.zeros(shape, dtype=np.uint8)
    nuc = np.zeros(shape, dtype=np.float32)
    cyto = np.zeros(shape, dtype=np.float32)
    for i, (cy, cx, cr) in enumerate(cells):
        y0, y1 = max(0, int(cy - 2 * cr)), min(h, int(cy + 2 * cr) + 1)
        x0, x1 = max(0, int(cx - 2 * cr)), min(w, int(cx + 2 * cr) + 1)
        sub = (slice(y0, y1), slice(x0, x1))
        ang = rng.uniform(0, np.pi)
        el = rng.uniform(0.75, 1.0)
        f = ellipse_field([Y[sub], X[sub]], (cy, cx), (cr, cr * el), ang) + 0.12 * wob[sub]
        fc = ellipse_field([Y[sub], X[sub]], (cy, cx), (cr * 1.6, cr * 1.6 * el), ang) + 0.07 * wob[sub]
        np.maximum(cyto[sub], np.clip((1 - fc) * 4, 0, 1), out=cyto[sub])
        np.maximum(nuc[sub], np.clip((1 - f) * 6, 0, 1), out=nuc[sub])
        if i < n_lab:
            region = f < 1 if not fluo else fc < 1
            lab[sub][region & (lab[sub] == 0)] = i + 1
    names = ["cell"] * n_lab if fluo else ["nucleus"] * n_lab
    chrom = smooth_noise(rng, shape, 0.8)
    if fluo:
        ill = 0.8 + 0.2 * smooth_noise(rng, shape, 40)
        rgb: np.ndarray = np.zeros((h, w, 3), dtype=np.float32)
        rgb[..., 1] = 0.55 * cyto * (0.8 + 0.2 * wob) * ill
        rgb[..., 0] = 0.12 * cyto * ill
        rgb[..., 2] = 0.85 * nuc * (0.8 + 0.2 * chrom) * ill
        rgb = gauss(rgb, (0.8, 0.8, 0)) + 0.02 + 0.015 * rng.standard_normal((h, w, 3)).astype(np.float32)
    else:
        stroma = np.clip(0.5 + 0.5 * smooth_noise(rng, shape, (2, 8), octaves=2), 0, 1)
        bg = np.array([0.95, 0.86, 0.92], dtype=np.float32)
        eosin = np.array([0.9, 0.55, 0.75], dtype=np.float32)
        hema = np.array([0.32, 0.18, 0.52], dtype=np.float32)
        rgb = bg * (1 - 0.6 * stroma[..., None]) + eosin * 0.6 * stroma[..., None]
        rgb = rgb * (1 - 0.25 * cyto[..., None]) + eosin * 0.25 * cyto[..., None] * 0.9
        alpha = (nuc * (0.85 + 0.15 * chrom))[..., None]
        rgb = rgb * (1 - alpha) + hema * alpha
        rgb = gauss(rgb, (0.7, 0.7, 0)) + 0.015 * rng.standard_normal((h, w, 3)).astype(np.float32)
    lab, names = finalize_labels(lab, names)
    return SynthCase(_rgb_u8(rgb), lab, names, (1.0, 1.0), {"stain": "fluorescence" if fluo else "H&E"})


def make_dermoscopy(rng: np.random.Generator, shape: tuple[int, int]) -> SynthCase:
    """Dermoscopy: skin texture, pigmented lesion with a network, a satellite, hairs, vignette."""
    h, w = shape
    Y, X = grid(shape, center=False)
    Y = np.broadcast_to(Y, shape).astype(np.float32)
    X = np.broadcast_to(X, shape).astype(np.float32)
    m = min(h, w)
    skin = np.array([rng.uniform(0.8, 0.92), rng.uniform(0.6, 0.7), rng.uniform(0.5, 0.6)], dtype=np.float32)
    tex = smooth_noise(rng, shape, 1.5)
    rgb = skin * (1 + 0.04 * tex + 0.06 * smooth_noise(rng, shape, 20))[..., None]
    wob = smooth_noise(rng, shape, 10, octaves=2)
    r = rng.uniform(0.18, 0.28) * m
    c = (h / 2 + rng.uniform(-0.1, 0.1) * h, w / 2 + rng.uniform(-0.1, 0.1) * w)
    f = ellipse_field([Y, X], c, (r, r * rng.uniform(0.7, 1.3)), rng.uniform(0, 3)) + 0.15 * wob
    les = f < 1
    net = np.abs(np.sin(X * 0.45 + 2 * wob) + np.sin(Y * 0.45 + 2 * tex)) < 0.6
    brown = np.array([0.45, 0.28, 0.18], dtype=np.float32)
    dark = np.array([0.22, 0.12, 0.08], dtype=np.float32)
    core = np.clip(1 - f, 0, 1)[..., None]
    col = brown * (1 - core) + dark * core
    col = col * (1 - 0.25 * net[..., None])
    edge = np.clip((1 - f) * 5, 0, 1)[..., None]
    rgb = rgb * (1 - edge) + col * edge
    veil = les & (smooth_noise(rng, shape, 8) > 1.2)
    rgb = np.where(veil[..., None], rgb * 0.5 + np.array([0.45, 0.5, 0.62], dtype=np.float32) * 0.5, rgb)
    lab = np.zeros(shape, dtype=np.uint8)
    lab[les] = 1
    sr = rng.uniform(0.02, 0.04) * m
    far = ~ndimage.binary_dilation(les, iterations=int(0.06 * m)) & (sr + 0.15 * m < Y) & (h - sr - 0.15 * m > Y) \
        & (sr + 0.15 * m < X) & (w - sr - 0.15 * m > X)
    sc = _pick(rng, far)
    sat = blob([Y, X], sc, (sr, sr * 1.2), wobble=wob, amount=0.15)
    rgb = np.where(sat[..., None], brown * 0.9, rgb)
    lab[sat] = 2
    names = ["lesion", "satellite lesion"]
    hair = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.integers(3, 12))):
        start = (rng.uniform(0, h), rng.uniform(0, w))
        pts = random_walk(rng, start, rng.uniform(0, 2 * np.pi), 160, m * 0.005, 0.01)
        stamp_polyline(shape, pts, np.full(160, rng.uniform(0.7, 1.3)), out=hair)
    rgb = rgb * (1 - 0.75 * np.clip(hair, 0, 1)[..., None])
    rgb = gauss(rgb, (0.6, 0.6, 0)) + 0.01 * rng.standard_normal((h, w, 3)).astype(np.float32)
    if rng.random() < 0.5:
        rr = np.hypot(Y - h / 2, X - w / 2) / (0.55 * np.hypot(h, w) / 1.2)
        rgb = rgb * np.clip((1.05 - rr) * 6, 0, 1)[..., None]
        lab[rr > 1.05] = 0
    lab, names = finalize_labels(lab, names)
    return SynthCase(_rgb_u8(rgb), lab, names, (1.0, 1.0))
