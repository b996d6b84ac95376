"""Benchmark: SegArena's NSD / case scoring side by side with DeepMind's surface-distance.

Run: ``.venv/bin/python bench/evaluator.py [--quick]``

Cases (issue 3):
  (a) 512x512x200, spacing (0.8, 0.8, 2.5), a ball of radius 120 mm vs the same shifted, tau = 2 mm
  (b) the same with radius 40 mm
  (c) 2D 1024x1024 disk, spacing 0.5 mm
  (d) a 13-label 3D case scored whole by score_case (vs the reference's per-label loop)

For each: best-of-N wall time of both in this run, the speed-up, the largest difference of the
results (must be <= 1e-9), and the peak extra memory of SegArena's call (tracemalloc, which sees
NumPy's allocations) relative to the two input masks. Targets: (a) >= 20x, (b) >= 5x, (c) >= 2x,
memory <= 3x. The last line is the smallest speed-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _stack import print_stack  # bench/ is the script directory, first on sys.path

import evaluator
from evaluator.scoring import label_stats

try:
    import surface_distance as sd
except ImportError:  # pragma: no cover
    sys.exit("surface-distance is needed for the side-by-side run: pip install surface-distance==0.1")


def ref_nsd(a, b, spacing, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = sd.compute_surface_distances(a, b, list(spacing))
        return float(sd.compute_surface_dice_at_tolerance(d, tol))


def ref_case(gt, pred, spacing, labels, tol=2.0):
    """Per-label DSC and NSD the way the 2024 script loops (full-volume masks per label)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in labels:
            g, p = gt == i, pred == i
            dsc = float(sd.compute_dice_coefficient(g, p))
            d = sd.compute_surface_distances(g, p, list(spacing))
            out[i] = (dsc, float(sd.compute_surface_dice_at_tolerance(d, tol)))
    return out


def ball(shape, spacing, r_mm, center_mm):
    axes = [(np.arange(n) * s - c) ** 2 for n, s, c in zip(shape, spacing, center_mm)]
    q = axes[0].reshape((-1,) + (1,) * (len(shape) - 1))
    for k, ax in enumerate(axes[1:], start=1):
        q = q + ax.reshape((1,) * k + (-1,) + (1,) * (len(shape) - k - 1))
    return q <= r_mm**2


def best_time(fn, n):
    best, result = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def peak_extra(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repetition of the reference")
    args = ap.parse_args()
    print_stack("numpy", "scipy", "edt")  # the stack this figure comes from (bench/_stack.py)
    n_ref = 1 if args.quick else 2
    n_ours = 5
    tol = 2.0
    ratios: list[tuple[float, str, float | None]] = []

    def report(label, t_ref, t_ours, diff, mem_ratio, target):
        ratio = t_ref / t_ours
        tgt = f"target >= {target:g}x" if target else "no target"
        print(
            f"{label}: surface-distance {t_ref * 1e3:9.1f} ms | segarena {t_ours * 1e3:8.1f} ms | "
            f"speed-up {ratio:6.1f}x ({tgt}) | max |diff| {diff:.1e} | peak extra memory "
            f"{mem_ratio:.2f}x the two masks (target <= 3)",
            flush=True,
        )
        if diff > 1e-9:
            print(f"  RESULTS DIFFER in {label}", flush=True)
        ratios.append((ratio, label, target))

    # (a), (b): 3D balls ------------------------------------------------------------
    shape, spacing = (512, 512, 200), (0.8, 0.8, 2.5)
    center = np.array([205.0, 205.0, 250.0])
    for tag, r, target in (("(a) 3D r=120 mm", 120.0, 20), ("(b) 3D r=40 mm", 40.0, 5)):
        a = ball(shape, spacing, r, center)
        b = ball(shape, spacing, r, center + np.array([3.0, 2.0, 1.5]))
        evaluator.nsd(a, b, spacing, tol)  # warm-up (area table, imports)
        t_ours, ours = best_time(lambda a=a, b=b: evaluator.nsd(a, b, spacing, tol), n_ours)
        t_ref, ref = best_time(lambda a=a, b=b: ref_nsd(a, b, spacing, tol), n_ref)
        mem = peak_extra(lambda a=a, b=b: evaluator.nsd(a, b, spacing, tol)) / (a.nbytes + b.nbytes)
        report(tag, t_ref, t_ours, abs(ours - ref), mem, target)
        del a, b

    # (c): 2D disk --------------------------------------------------------------------
    shape2, spacing2 = (1024, 1024), (0.5, 0.5)
    c2 = np.array([256.0, 256.0])
    a = ball(shape2, spacing2, 150.0, c2)
    b = ball(shape2, spacing2, 150.0, c2 + np.array([1.5, 2.5]))
    evaluator.nsd(a, b, spacing2, tol)
    t_ours, ours = best_time(lambda: evaluator.nsd(a, b, spacing2, tol), n_ours * 4)
    t_ref, ref = best_time(lambda: ref_nsd(a, b, spacing2, tol), n_ref * 5)
    mem = peak_extra(lambda: evaluator.nsd(a, b, spacing2, tol)) / (a.nbytes + b.nbytes)
    report("(c) 2D disk 1024^2", t_ref, t_ours, abs(ours - ref), mem, 2)

    # (d): 13-label case ---------------------------------------------------------------
    rng = np.random.default_rng(13)
    gt = np.zeros(shape, np.uint8)
    for lab in range(1, 14):
        cen = np.array([rng.uniform(80, 330), rng.uniform(80, 330), rng.uniform(100, 400)])
        gt[ball(shape, spacing, rng.uniform(12, 45), cen)] = lab
    pred = np.roll(gt, (2, 1, 1), axis=(0, 1, 2))
    pred[ball(shape, spacing, 10.0, np.array([200.0, 200.0, 250.0]))] = 0
    labels = list(range(1, 14))

    def ours_d():
        return evaluator.score_case(gt, pred, spacing=spacing, labels=labels)

    ours_d()
    t_ours, s = best_time(ours_d, 3)
    t_stats, _ = best_time(lambda: label_stats(gt, pred, labels), 3)
    t_ref, ref = best_time(lambda: ref_case(gt, pred, spacing, labels), 1)
    diff = max(
        max(abs(s.per_class[i].dsc - ref[i][0]), abs(s.per_class[i].nsd - ref[i][1])) for i in labels
    )
    mem = peak_extra(ours_d) / (gt.nbytes + pred.nbytes)
    print(f"    (d) one streaming pass for all counts and boxes: {t_stats * 1e3:.1f} ms of the {t_ours * 1e3:.1f} ms")
    report("(d) 13 labels score_case", t_ref, t_ours, diff, mem, None)

    worst = min(ratios, key=lambda x: x[0])
    print(f"smallest speed-up: {worst[0]:.1f}x in {worst[1]}")


if __name__ == "__main__":
    main()
