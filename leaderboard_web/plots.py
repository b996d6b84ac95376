"""Server-side SVG plots (no JavaScript, no CDN): accuracy vs runtime, per-modality bars, ranking stability."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from api.leaderboard.board import Row

__all__ = ["scatter_accuracy_runtime", "modality_bars", "stability_plot", "significance_plot", "iteration_curves",
           "PALETTE"]

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
_NEEDS_TWO = '<text x="320" y="60" text-anchor="middle" fill="#6b7280">needs at least two ranked entries</text>'
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'


def _svg(w: int, h: int, body: list[str], title: str) -> str:
    # scales down on narrow screens, never up beyond 1.25× (text stays a readable size)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" '
            f'style="max-width:{int(w * 1.25)}px;height:auto;display:block" '
            f'aria-label="{escape(title)}" {_FONT} font-size="12"><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def _desc(title: str, parts: list[str]) -> str:
    """The plot's text alternative with its numbers (an SVG ``<desc>``: the accessible description of the image)."""
    return f"<desc>{escape(title + '. ' + '; '.join(parts))}</desc>"


def _rank_ticks(n: int, x0: float, step: float, y: str) -> list[str]:
    """Rank labels under ``n`` columns ``step`` wide from ``x0``: every rank up to 20 entries, else 1 and every 5th."""
    return [f'<text x="{x0 + (r - 0.5) * step:.1f}" y="{y}" text-anchor="middle" fill="#475569" font-size="10">{r}</text>'
            for r in range(1, n + 1) if n <= 20 or r == 1 or r % 5 == 0]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            ticks.append(round(v, 10))
        v += step
    return ticks


def scatter_accuracy_runtime(rows: list[Row], *, label_top: int = 5) -> str:
    """DSC (y) against mean runtime per case (x, log scale); baselines as hollow squares."""
    pts = [r for r in rows if r.dsc is not None and r.runtime_s]
    w, h, ml, mr, mt, mb = 640, 340, 56, 16, 16, 44
    title = "Accuracy vs runtime: mean DSC against mean runtime per case (log scale)"
    if not pts:
        return _svg(w, h, [f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#6b7280">no entries yet</text>'], title)
    xs = [math.log10(max(float(r.runtime_s or 0.0), 1e-3)) for r in pts]
    ys = [float(r.dsc or 0.0) for r in pts]
    x0, x1 = math.floor(min(xs) * 2) / 2, math.ceil(max(xs) * 2) / 2
    if x1 - x0 < 0.5:
        x1 = x0 + 1
    y0, y1 = max(0.0, math.floor(min(ys) * 20) / 20 - 0.05), min(1.0, math.ceil(max(ys) * 20) / 20 + 0.02)
    if y1 <= y0:
        y0, y1 = 0.0, 1.0
    px = lambda v: ml + (v - x0) / (x1 - x0) * (w - ml - mr)  # noqa: E731
    py = lambda v: h - mb - (v - y0) / (y1 - y0) * (h - mt - mb)  # noqa: E731
    body = [f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="#fff" stroke="#e5e7eb"/>']
    for t in _nice_ticks(y0, y1):
        y = py(t)
        body.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f1f5f9"/>'
                    f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#475569">{t:.2f}</text>')
    e = math.floor(x0)
    while e <= x1:
        for m in (1, 2, 5):
            v = e + math.log10(m)
            if x0 - 1e-9 <= v <= x1 + 1e-9:
                x = px(v)
                label = f"{10 ** v:g}"
                body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{h - mb}" stroke="#f1f5f9"/>'
                            f'<text x="{x:.1f}" y="{h - mb + 16}" text-anchor="middle" fill="#475569">{label}</text>')
        e += 1
    body.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 6}" text-anchor="middle" fill="#111827">'
                'runtime per case (s, log scale)</text>'
                f'<text transform="translate(14,{(mt + h - mb) / 2}) rotate(-90)" text-anchor="middle" '
                'fill="#111827">mean DSC</text>')
    ranked = sorted((r for r in pts if r.rank), key=lambda r: r.rank or 0)
    if not ranked:  # an unranked board (reproducibility): label the entries as listed
        ranked = [r for r in pts if not r.baseline]
    top = {id(r) for r in ranked[:label_top]}
    placed: list[tuple[float, float, float, float]] = []
    for r, xv, yv in zip(pts, xs, ys):
        x, y = px(xv), py(yv)
        name = escape(f'{r.team} · {r.label or ""}'.strip(" ·"))
        tip = f'<title>{name}: DSC {r.dsc:.3f}, NSD {(r.nsd or 0):.3f}, {r.runtime_s:.2f} s</title>'
        if r.baseline:
            body.append(f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="none" stroke="#111827" '
                        f'stroke-width="1.5">{tip}</rect>')
        else:
            color = PALETTE[0] if id(r) in top else "#94a3b8"
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}" fill-opacity="0.85" '
                        f'stroke="#fff">{tip}</circle>')
        if id(r) in top or r.baseline:
            raw = (f'#{r.rank} {r.team}' if r.rank
                   else str(r.label or r.team) if r.baseline else str(r.team))
            raw = raw[:24]
            tw = 6.2 * len(raw)
            # first free spot among: above-right, below-right, above-left, below-left
            for dx, dy, anchor in ((8, -6, "start"), (8, 14, "start"), (-8, -6, "end"), (-8, 14, "end")):
                lx0 = x + dx if anchor == "start" else x + dx - tw
                box = (lx0, y + dy - 10, lx0 + tw, y + dy + 2)
                if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                    placed.append(box)
                    body.append(f'<text x="{x + dx:.1f}" y="{y + dy:.1f}" text-anchor="{anchor}" fill="#111827" '
                                f'font-size="11">{escape(raw)}</text>')
                    break
    body.insert(0, _desc(title, [f"{r.team}{' (baseline)' if r.baseline else ''}: DSC {float(r.dsc or 0.0):.3f}, "
                                 f"runtime {float(r.runtime_s or 0.0):.2f} s" for r in pts]))
    return _svg(w, h, body, title)


def modality_bars(rows: list[Row], modalities: list[str], *, metric: str = "dsc", top: int = 5) -> str:
    """Grouped bars: the top entries' (and baselines') mean ``metric`` per modality."""
    chosen = sorted((r for r in rows if r.rank), key=lambda r: r.rank or 0)[:top]
    if not chosen:  # an unranked board (reproducibility): the first entries as listed
        chosen = [r for r in rows if not r.baseline][:top]
    chosen += [r for r in rows if r.baseline][:1]
    slanted = len(modalities) > 7  # long modality names would overlap side by side
    w, h, ml, mr, mt, mb = 640, 300 + (32 if slanted else 0), 44, 12, 40, 72 if slanted else 40
    title = f"Per-modality mean {metric.upper()} of the top {top} entries"
    if not chosen or not modalities:
        return _svg(w, h, [f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#6b7280">no entries yet</text>'], title)
    gw = (w - ml - mr) / len(modalities)
    bw = max(2.0, (gw - 8) / len(chosen))
    py = lambda v: h - mb - v * (h - mt - mb)  # noqa: E731
    body = []
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        y = py(t)
        body.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                    f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#475569">{t:.2f}</text>')
    for gi, mod in enumerate(modalities):
        gx = ml + gi * gw + 4
        for ri, r in enumerate(chosen):
            v = r.value(f"{mod}:{metric}")
            if v is None:
                continue
            color = "#111827" if r.baseline else PALETTE[ri % len(PALETTE)]
            op = ' fill-opacity="0.35"' if r.baseline else ""
            y = py(v)
            body.append(f'<rect x="{gx + ri * bw:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" height="{h - mb - y:.1f}" fill="{color}"'
                        f'{op}><title>{escape(str(r.team))} · {escape(mod)}: {v:.3f}</title></rect>')
        tx, ty = gx + gw / 2 - 4, h - mb + 16
        if slanted:
            body.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="end" transform="rotate(-35 {tx:.1f} {ty:.1f})" '
                        f'fill="#111827">{escape(mod)}</text>')
        else:
            body.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="middle" fill="#111827">{escape(mod)}</text>')
    lx = float(ml)
    for ri, r in enumerate(chosen):
        color = "#111827" if r.baseline else PALETTE[ri % len(PALETTE)]
        name = (f'#{r.rank} {r.team}' if r.rank
                else str(r.label or r.team) if r.baseline else str(r.team))[:22]
        op = ' fill-opacity="0.35"' if r.baseline else ""
        body.append(f'<rect x="{lx}" y="10" width="10" height="10" fill="{color}"{op}/>'
                    f'<text x="{lx + 14}" y="19" fill="#111827" font-size="11">{escape(name)}</text>')
        lx += 22 + 6.0 * len(name)
    body.insert(0, _desc(title, [f"{r.team}{' (baseline)' if r.baseline else ''}: " + ", ".join(
        f"{mod} {v:.3f}" for mod in modalities if (v := r.value(f"{mod}:{metric}")) is not None) for r in chosen]))
    return _svg(w, h, body, title)


def stability_plot(stab: dict[str, Any] | None) -> str:
    """Blob plot: each entry's bootstrap rank frequencies (area ∝ frequency), full rank as a ring."""
    title = "Ranking stability: bootstrap rank distribution per entry"
    if not stab or not stab.get("entries"):
        return _svg(640, 120, [_NEEDS_TWO], title)
    entries = stab["entries"]
    n = len(entries)
    row_h = 18
    ml, mr, mt, mb = 190, 16, 28, 30
    w = 1100
    h = mt + mb + n * row_h
    cw = (w - ml - mr) / max(n, 1)
    body = [f'<text x="{ml}" y="16" fill="#111827">bootstrap of cases ({stab["n_boot"]}×), Kendall\'s τ to the full ranking: '
            f'mean {stab["tau_mean"]:.3f}, 95% [{stab["tau_p2_5"]:.3f}, {stab["tau_p97_5"]:.3f}]</text>']
    for i, e in enumerate(entries):
        y = mt + i * row_h + row_h / 2
        body.append(f'<text x="{ml - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#111827" font-size="11">'
                    f'{escape(str(e["name"]))[:26]}</text>'
                    f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f1f5f9"/>')
        for r, f in enumerate(e["rank_freq"], start=1):
            if f <= 0:
                continue
            x = ml + (r - 0.5) * cw
            rad = max(0.8, math.sqrt(f) * min(cw, row_h) * 0.5)
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{rad:.1f}" fill="{PALETTE[0]}" fill-opacity="0.7">'
                        f'<title>{escape(str(e["name"]))}: rank {r} in {f * 100:.1f}% of resamples</title></circle>')
        x = ml + (e["rank"] - 0.5) * cw
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{min(cw, row_h) * 0.5:.1f}" fill="none" stroke="#dc2626"/>')
    body += _rank_ticks(n, ml, cw, f"{h - mb + 14}")
    body.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 4}" text-anchor="middle" fill="#111827">'
                'rank (red ring: full-data rank)</text>')
    body.insert(0, _desc(title, [f"Kendall's tau mean {stab['tau_mean']:.3f} over {stab['n_boot']} resamples"] + [
        f"{e['name']}: rank {e['rank']}, median {float(e['rank_median']):.1f}, 95% interval "
        f"[{float(e['rank_p2_5']):.1f}, {float(e['rank_p97_5']):.1f}]" for e in entries]))
    return _svg(w, h, body, title)


def significance_plot(sig: dict[str, Any] | None) -> str:
    """Significance map: cell (row i, column j) filled when entry i is significantly better than entry j."""
    title = "Significance map: row significantly better than column (one-sided paired Wilcoxon, Holm)"
    if not sig or not sig.get("names"):
        return _svg(640, 120, [_NEEDS_TWO], title)
    names = sig["names"]
    n = len(names)
    cell = max(6.0, min(18.0, 700.0 / n))
    ml, mt = 190, 40
    w = max(640, int(ml + n * cell + 20))
    h = int(mt + n * cell + 40)
    body = [f'<text x="{ml}" y="16" fill="#111827">metric {escape(sig["metric"].upper())} · filled: row better than '
            f'column, Holm-adjusted p &lt; {sig["alpha"]}</text>']
    for i, name in enumerate(names):
        y = mt + i * cell
        body.append(f'<text x="{ml - 8}" y="{y + cell * 0.75:.1f}" text-anchor="end" fill="#111827" '
                    f'font-size="{min(11, cell * 0.8):.0f}">{escape(str(name))[:26]}</text>')
        for j in range(n):
            x = ml + j * cell
            if i == j:
                fill = "#e5e7eb"
            else:
                fill = PALETTE[0] if sig["significant"][i][j] else "#f8fafc"
            p = sig["adjusted"][i][j]
            tip = "" if p is None else f'<title>{escape(str(name))} vs {escape(str(names[j]))}: adjusted p = {p:.4g}</title>'
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell - 1:.1f}" height="{cell - 1:.1f}" '
                        f'fill="{fill}">{tip}</rect>')
    body += _rank_ticks(n, ml, cell, f"{mt + n * cell + 14:.1f}")
    body.append(f'<text x="{ml + n * cell / 2:.1f}" y="{h - 6}" text-anchor="middle" fill="#111827">column: entry by rank</text>')
    wins = [f"{name} better than " + (", ".join(str(names[j]) for j in range(n) if sig["significant"][i][j]) or "none")
            + f" (smallest adjusted p {min((p for p in sig['adjusted'][i] if p is not None), default=1.0):.4f})"
            for i, name in enumerate(names)]
    body.insert(0, _desc(title, [f"metric {sig['metric'].upper()}, alpha {sig['alpha']}"] + wins))
    return _svg(w, h, body, title)


def iteration_curves(rows: list[Row], iterations: int, *, metric: str = "dsc", top: int = 8) -> str:
    """Interactive tracks: each entry's mean ``metric`` after each iteration (0 = the first prompt, then one click
    per iteration), one line per entry (the ranked ones first, baselines dashed), with a table of the same numbers
    as the text alternative (``<desc>`` in the SVG and a table of the numbers in a ``<details>`` below it)."""
    chosen = sorted((r for r in rows if r.rank and r.curve), key=lambda r: r.rank or 0)[:top]
    if not chosen:
        chosen = [r for r in rows if r.curve and not r.baseline][:top]
    chosen += [r for r in rows if r.baseline and r.curve][:2]
    w, h, ml, mr, mt, mb = 640, 320, 48, 150, 16, 44
    name = metric.upper()
    title = f"Mean {name} after each iteration (0 = first prompt, then one simulated click per iteration)"
    if not chosen or iterations < 1:
        return _svg(w, h, [f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#6b7280">no entries yet</text>'],
                    title)
    vals = [[(v if v is not None else 0.0) for v in (r.curve or {}).get(metric, [])] for r in chosen]
    lo = min((min(v) for v in vals if v), default=0.0)
    hi = max((max(v) for v in vals if v), default=1.0)
    y0, y1 = max(0.0, math.floor(lo * 20) / 20 - 0.05), min(1.0, math.ceil(hi * 20) / 20 + 0.02)
    if y1 <= y0:
        y0, y1 = 0.0, 1.0
    px = lambda i: ml + i / iterations * (w - ml - mr)  # noqa: E731
    py = lambda v: h - mb - (v - y0) / (y1 - y0) * (h - mt - mb)  # noqa: E731
    body = [f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="#fff" stroke="#e5e7eb"/>']
    for t in _nice_ticks(y0, y1):
        y = py(t)
        body.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f1f5f9"/>'
                    f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#475569">{t:.2f}</text>')
    for i in range(iterations + 1):
        x = px(i)
        body.append(f'<text x="{x:.1f}" y="{h - mb + 16}" text-anchor="middle" fill="#475569">{i}</text>')
    body.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 6}" text-anchor="middle" fill="#111827">iteration '
                '(clicks so far)</text>'
                f'<text transform="translate(14,{(mt + h - mb) / 2}) rotate(-90)" text-anchor="middle" '
                f'fill="#111827">mean {name}</text>')
    rows_text = []
    for k, (r, v) in enumerate(zip(chosen, vals, strict=True)):
        color = "#111827" if r.baseline else PALETTE[k % len(PALETTE)]
        label = (f"#{r.rank} " if r.rank else "") + str(r.team if not r.baseline else (r.label or r.team))
        pts = " ".join(f"{px(i):.1f},{py(y):.1f}" for i, y in enumerate(v))
        dash = ' stroke-dasharray="5 3"' if r.baseline else ""
        nums = ", ".join(f"{y:.3f}" for y in v)
        body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}>'
                    f'<title>{escape(label)}: {name} {nums}</title></polyline>')
        body += [f'<circle cx="{px(i):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for i, y in enumerate(v)]
        ly = mt + 14 + 16 * k
        body.append(f'<line x1="{w - mr + 10}" x2="{w - mr + 26}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                    f'stroke-width="2"{dash}/><text x="{w - mr + 30}" y="{ly}" fill="#111827" font-size="11">'
                    f'{escape(label[:20])}</text>')
        rows_text.append(f"{label}: {nums}")
    desc = f"{title}. " + "; ".join(rows_text)
    body.insert(0, f"<desc>{escape(desc)}</desc>")
    svg = _svg(w, h, body, title)
    head = "".join(f"<th scope=\"col\">{i}</th>" for i in range(iterations + 1))
    trs = "".join(f"<tr><th scope=\"row\">{escape(t.split(': ')[0])}</th>"
                  + "".join(f"<td>{escape(x)}</td>" for x in t.split(": ", 1)[1].split(", ")) + "</tr>"
                  for t in rows_text)
    table = (f'<details class="curve-numbers" data-metric="{metric}"><summary>The numbers ({name} per iteration)'
             f'</summary><table><caption>{escape(title)}</caption>'
             f"<thead><tr><th scope=\"col\">entry</th>{head}</tr></thead><tbody>{trs}</tbody></table></details>")
    return svg + table
