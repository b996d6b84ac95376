"""The challenge report as one offline HTML file: ``segarena admin report TRACK -o report.html``.

Client side only (no server imports): it renders the JSON of ``GET /api/admin/challenges/{c}/tracks/{t}/report.json``
(``api.reports.service``). Plots are inline SVG with a title and, next to each, a table with the numbers it shows
(the SVG's ``aria-describedby`` points at it): screen readers, print and copy-paste all get the numbers. No external
asset (fonts, scripts, styles are inline or system), a print stylesheet for PDF through the browser's print dialog.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["render_report"]

PALETTE = ("#1d4ed8", "#b91c1c", "#047857", "#b45309", "#6d28d9", "#0e7490", "#be185d", "#374151")
STATE_COLOURS = {"succeeded": "#047857", "failed": "#b91c1c", "cancelled": "#6b7280", "queued": "#1d4ed8",
                 "loading": "#0e7490", "running": "#b45309", "scoring": "#6d28d9"}
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'

CSS = """
:root { --ink: #111827; --muted: #4b5563; --line: #d1d5db; --head: #f1f5f9; --accent: #1d4ed8; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0;
       background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 2px solid var(--line);
padding-bottom: 4px; } h3 { font-size: 16px; margin: 20px 0 6px; }
.muted, figcaption { color: var(--muted); }
a { color: var(--accent); text-decoration: underline; }
nav.toc ol { columns: 2; margin: 8px 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: var(--head); } th[scope=row], td.text, th.text { text-align: left; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
figure { margin: 12px 0 20px; } figcaption { font-size: 13px; margin-top: 4px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; } dl.facts dt { font-weight: 600; }
details.alt summary { cursor: pointer; color: var(--accent); }
.sig { background: #bbf7d0; font-weight: 600; }
@page { size: A4; margin: 14mm; }
@media print {
  body { font-size: 11px; } main { max-width: none; padding: 0; }
  nav.toc { display: none; }
  h2 { break-after: avoid; } figure, table, dl { break-inside: avoid; }
  details.alt > summary { display: none; } details.alt { display: block; }
  a { color: inherit; text-decoration: none; }
}
"""


def _e(x: Any) -> str:
    return escape("" if x is None else str(x))


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (int, float)):
        return f"{x:.{digits}f}"
    return _e(x)


def _svg(w: int, h: int, body: list[str], title: str, alt_id: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" '
            f'style="max-width:{w}px;height:auto;display:block" aria-label="{_e(title)}" '
            f'aria-describedby="{alt_id}" {_FONT} font-size="12"><title>{_e(title)}</title>'
            + "".join(body) + "</svg>")


def _figure(fid: str, svg: str, caption: str, alt_table: str) -> str:
    """A plot, its caption and its numbers (the text alternative, referenced by the SVG's aria-describedby)."""
    return (f'<figure id="{fid}" class="plot">{svg}<figcaption>{caption}</figcaption>'
            f'<details class="alt" open><summary>Numbers shown in this figure</summary>'
            f'<div id="{fid}-alt">{alt_table}</div></details></figure>')


def _table(caption: str, head: list[str], rows: list[list[str]], *, first_text: int = 1) -> str:
    th = "".join(f'<th scope="col"{" class=text" if i < first_text else ""}>{h}</th>' for i, h in enumerate(head))
    body = []
    for r in rows:
        cells = [f'<th scope="row">{r[0]}</th>'] + [f'<td{" class=text" if i + 1 < first_text else ""}>{c}</td>'
                                                    for i, c in enumerate(r[1:])]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><caption>{caption}</caption><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    v, out = math.floor(lo / step) * step, []
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            out.append(round(v, 10))
        v += step
    return out


# --------------------------------------------------------------------------- figures


def blob_plot(stab: dict[str, Any]) -> str:
    """challengeR's blob plot: per entry (x, by full rank) the frequency of each bootstrap rank (y) as a circle's
    area, the median rank (cross) and the 2.5–97.5 % interval (line)."""
    entries = stab["entries"]
    n = len(entries)
    w, h, ml, mr, mt, mb = max(360, 90 + 70 * n), 60 + 36 * n + 110, 60, 20, 20, 120
    pw, ph = w - ml - mr, h - mt - mb
    px = lambda i: ml + (i + 0.5) * pw / n  # noqa: E731
    py = lambda rank: mt + (rank - 0.5) * ph / n  # noqa: E731
    body = [f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#d1d5db"/>']
    for rank in range(1, n + 1):
        body.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{py(rank):.1f}" y2="{py(rank):.1f}" stroke="#f1f5f9"/>'
                    f'<text x="{ml - 8}" y="{py(rank) + 4:.1f}" text-anchor="end">{rank}</text>')
    rmax = min(pw / n, ph / n) * 0.48
    for i, e in enumerate(entries):
        col = PALETTE[i % len(PALETTE)]
        x = px(i)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(e["rank_p2_5"]):.1f}" y2="{py(e["rank_p97_5"]):.1f}" '
                    f'stroke="#111827" stroke-width="1.5"/>')
        for r, freq in enumerate(e["rank_freq"], start=1):
            if freq > 0:
                body.append(f'<circle cx="{x:.1f}" cy="{py(r):.1f}" r="{max(1.5, rmax * math.sqrt(freq)):.1f}" '
                            f'fill="{col}" fill-opacity="0.55" stroke="{col}"><title>{_e(e["name"])}: rank {r} in '
                            f'{freq * 100:.1f} % of resamples</title></circle>')
        m = py(e["rank_median"])
        body.append(f'<path d="M{x - 6:.1f},{m - 6:.1f}L{x + 6:.1f},{m + 6:.1f}M{x - 6:.1f},{m + 6:.1f}L{x + 6:.1f},'
                    f'{m - 6:.1f}" stroke="#111827" stroke-width="2"/>')
        body.append(f'<text transform="translate({x:.1f},{mt + ph + 12}) rotate(40)" font-size="11">'
                    f'{_e(e["name"][:28])}</text>')
    body.append(f'<text transform="translate(16,{mt + ph / 2}) rotate(-90)" text-anchor="middle">rank</text>')
    title = (f"Ranking stability (blob plot): rank frequencies over {stab['n_boot']} bootstrap samples of the cases; "
             f"Kendall's tau median {stab['tau_median']:.3f}")
    return _svg(w, h, body, title, "fig-stability-alt")


def significance_svg(sig: dict[str, Any], fid: str) -> str:
    names = sig["names"]
    n = len(names)
    cell = 28 if n <= 12 else 18
    ml, mt = 190, 150
    w, h = ml + cell * n + 90, mt + cell * n + 20
    body = []
    for i in range(n):
        body.append(f'<text x="{ml - 6}" y="{mt + (i + 0.5) * cell + 4:.1f}" text-anchor="end" font-size="11">'
                    f'{_e(names[i][:26])}</text>')
        body.append(f'<text transform="translate({ml + (i + 0.5) * cell + 4:.1f},{mt - 6}) rotate(-60)" '
                    f'font-size="11">{_e(names[i][:26])}</text>')
        for j in range(n):
            s = bool(sig["significant"][i][j])
            fill = "#f3f4f6" if i == j else ("#047857" if s else "#fde68a")
            p = sig["adjusted"][i][j]
            tip = "" if i == j else (f"{_e(names[i])} better than {_e(names[j])}: adjusted p = {_f(p, 4)}"
                                     + (" (significant)" if s else ""))
            body.append(f'<rect x="{ml + j * cell}" y="{mt + i * cell}" width="{cell - 1}" height="{cell - 1}" '
                        f'fill="{fill}"><title>{tip}</title></rect>')
    title = (f"Significance map ({sig['metric'].upper()}): green = the row's entry is significantly better than the "
             f"column's (one-sided Wilcoxon signed-rank, Holm-adjusted p < {sig['alpha']})")
    return _svg(w, h, body, title, f"{fid}-alt")


def box_svg(dist: list[dict[str, Any]], key: str, unit: str, fid: str, *, log: bool) -> str:
    items = [d for d in dist if d.get(key)]
    n = max(len(items), 1)
    w, ml, mr, mt, mb = 720, 200, 20, 12, 36
    row_h = 24
    h = mt + mb + row_h * n
    what = "Runtime" if key == "runtime_s" else "Peak memory"
    title = f"{what} per case ({unit}) of each entry: box = quartiles, whiskers = min and max"
    if not items:
        return _svg(w, 80, [f'<text x="{w / 2}" y="40" text-anchor="middle">no values recorded</text>'], title,
                    f"{fid}-alt")
    lo = min(d[key]["min"] for d in items)
    hi = max(d[key]["max"] for d in items)
    tr = (lambda v: math.log10(max(v, 1e-3))) if log else (lambda v: v)
    a, b = tr(lo), tr(hi)
    if log:
        a, b = math.floor(a), math.ceil(b)
    if b <= a:
        b = a + 1
    x = lambda v: ml + (tr(v) - a) / (b - a) * (w - ml - mr)  # noqa: E731
    body = [f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{row_h * n}" fill="#fff" stroke="#d1d5db"/>']
    ticks = [10.0 ** k for k in range(int(a), int(b) + 1)] if log else _ticks(a, b)
    for t in ticks:
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{mt}" y2="{mt + row_h * n}" stroke="#e5e7eb"/>'
                    f'<text x="{x(t):.1f}" y="{mt + row_h * n + 14}" text-anchor="middle">{t:g}</text>')
    body.append(f'<text x="{ml + (w - ml - mr) / 2}" y="{h - 4}" text-anchor="middle">{_e(unit)}'
                f'{" (log scale)" if log else ""}</text>')
    for i, d in enumerate(items):
        q = d[key]
        y = mt + i * row_h + row_h / 2
        col = PALETTE[i % len(PALETTE)]
        body.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_e(d["name"][:28])}</text>'
                    f'<line x1="{x(q["min"]):.1f}" x2="{x(q["max"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#374151"/>'
                    f'<rect x="{x(q["q1"]):.1f}" y="{y - 7:.1f}" width="{max(1.0, x(q["q3"]) - x(q["q1"])):.1f}" '
                    f'height="14" fill="{col}" fill-opacity="0.4" stroke="{col}"/>'
                    f'<line x1="{x(q["median"]):.1f}" x2="{x(q["median"]):.1f}" y1="{y - 7:.1f}" y2="{y + 7:.1f}" '
                    f'stroke="#111827" stroke-width="2"/>')
    return _svg(w, h, body, title, f"{fid}-alt")


def hbars_svg(items: list[tuple[str, float]], title: str, fid: str, *, unit: str = "cases",
              colour: str = "#b91c1c") -> str:
    w, ml, mr, mt = 720, 260, 60, 8
    row_h = 26
    h = mt * 2 + row_h * max(len(items), 1) + 24
    if not items:
        return _svg(w, 60, [f'<text x="{w / 2}" y="34" text-anchor="middle">none</text>'], title, f"{fid}-alt")
    top = max(v for _, v in items) or 1.0
    body = []
    for i, (label, v) in enumerate(items):
        y = mt + i * row_h
        bw = (w - ml - mr) * v / top
        body.append(f'<text x="{ml - 6}" y="{y + 15}" text-anchor="end" font-size="11">{_e(label[:40])}</text>'
                    f'<rect x="{ml}" y="{y + 3}" width="{bw:.1f}" height="{row_h - 6}" fill="{colour}"/>'
                    f'<text x="{ml + bw + 4:.1f}" y="{y + 15}" font-size="11">{v:g}</text>')
    body.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{h - 24}" stroke="#374151"/>'
                f'<text x="{ml + (w - ml - mr) / 2}" y="{h - 6}" text-anchor="middle">{_e(unit)}</text>')
    return _svg(w, h, body, title, f"{fid}-alt")


def timeline_svg(days: list[dict[str, Any]], states: list[str]) -> str:
    n = max(len(days), 1)
    w, h, ml, mr, mt, mb = 720, 260, 44, 12, 28, 64
    bw = (w - ml - mr) / n
    top = max([d["total"] for d in days] + [1])
    ticks = [t for t in _ticks(0, top) if float(t).is_integer()]
    y = lambda v: h - mb - v / max(top, ticks[-1] if ticks else top) * (h - mt - mb)  # noqa: E731
    body = [f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="#fff" stroke="#d1d5db"/>']
    for t in ticks:
        body.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e7eb"/>'
                    f'<text x="{ml - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for i, d in enumerate(days):
        base = 0
        for s in states:
            v = d.get(s, 0)
            if v:
                body.append(f'<rect x="{ml + i * bw + 1:.1f}" y="{y(base + v):.1f}" width="{max(bw - 2, 1):.1f}" '
                            f'height="{y(base) - y(base + v):.1f}" fill="{STATE_COLOURS.get(s, "#374151")}">'
                            f'<title>{_e(d["day"])}: {v} {s}</title></rect>')
                base += v
        if n <= 20 or i % math.ceil(n / 20) == 0:
            body.append(f'<text transform="translate({ml + (i + 0.5) * bw:.1f},{h - mb + 10}) rotate(45)" '
                        f'font-size="10">{_e(d["day"])}</text>')
    lx = ml
    for s in states:
        body.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{STATE_COLOURS.get(s, "#374151")}"/>'
                    f'<text x="{lx + 14}" y="15" font-size="11">{s}</text>')
        lx += 24 + 7 * len(s)
    return _svg(w, h, body, "Submissions per day, by final state", "fig-timeline-alt")


# --------------------------------------------------------------------------- sections


def _facts(pairs: list[tuple[str, Any]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs
                                           if v not in (None, "")) + "</dl>"


def _design(rep: dict[str, Any]) -> str:
    t = rep["track"]
    return ('<section id="design"><h2>Challenge design and assessment</h2>' + _facts([
        ("Challenge", f"{rep['challenge']['title']} ({rep['challenge']['slug']})"),
        ("Track", f"{t['title']} ({t['slug']}, {t['kind']})"), ("Track description", t["description"]),
        ("Prompt", t["prompt"]), ("Metric profile", t["metric_profile"]),
        ("Metrics", "DSC (higher is better), NSD (higher is better), runtime per case (lower is better)"),
        ("Ranking scheme", rep["scheme"]["label"]), ("Row per team", t["row_policy"]),
        ("Failed cases", rep["failure_rule"]),
        ("Submissions allowed per team per day", t.get("quota_per_day")),
        ("Time limit per case", f"{t['case_timeout_s']} s"),
        ("Time limit per run", t.get("total_timeout_s") and f"{t['total_timeout_s']} s"),
        ("Container resources", f"{t.get('cpus')} CPU(s), {t.get('memory_mb')} MB memory, {t.get('gpus') or 0} GPU(s)"),
        ("Opens", t["opens_at"]), ("Closes", t["closes_at"]), ("Frozen at", t["frozen_at"]),
        ("Teams that submitted", rep["submissions"]["n_teams"]), ("Submissions", rep["submissions"]["n_submissions"]),
    ]) + "</section>")


def _testset(rep: dict[str, Any]) -> str:
    ts = rep.get("testset")
    out = ['<section id="testset"><h2>Test set</h2>']
    if ts is None:
        out.append(f'<p>The manifest of test set <code>{_e(rep["track"]["testset"])}</code> could not be read; '
                   f'{rep["n_cases"]} cases were scored.</p></section>')
        return "".join(out)
    out.append(_facts([("Id", ts["id"]), ("Version", ts["version"]), ("Description", ts["description"]),
                       ("Cases", ts["n_cases"]), ("Dimensionality", ", ".join(f"{k}: {v}" for k, v in ts["dims"].items())),
                       ("Labelled structures", ts["structures"]["total"]),
                       ("Surface tolerance (NSD)", f"{ts['tolerance_mm']} mm"),
                       ("Generator", ts["generator"]
                        and "{name} {version} (size {size}, seed {seed})".format(**ts["generator"]))]))
    sizes = list(ts["size_classes"])
    rows = [[_e(m), str(v["cases"]), *(str(v.get(s, 0)) for s in sizes)] for m, v in ts["modalities"].items()]
    rows.append(["<strong>all</strong>", str(ts["n_cases"]), *(str(ts["size_classes"][s]) for s in sizes)])
    out.append(_table("Cases per modality and size class (of the case's largest structure)",
                      ["Modality", "Cases", *[_e(s) for s in sizes]], rows))
    out.append(_table("Labelled structures per size class", ["Structures", *[_e(s) for s in sizes]],
                      [["count", *(str(ts["structures"][s]) for s in sizes)]]))
    if ts["notes"]:
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in ts["notes"]) + "</ul>")
    return "".join(out) + "</section>"


def _ranking(rep: dict[str, Any]) -> str:
    rows = []
    for r in rep["ranking"]:
        kind = "baseline (unranked)" if r["baseline"] else ""
        rows.append([_e(r["rank"] or "–"), _e(r["name"]), kind, _f(r["score"], 2), _f(r["dsc"], 4), _f(r["nsd"], 4),
                     _f(r["runtime_s"], 2), f"{r['cases_ok']}/{r['cases_total']}", _e(r["submitted_at"])])
    out = ['<section id="ranking"><h2>Ranking</h2>',
           f'<p>Scheme: <strong>{_e(rep["scheme"]["label"])}</strong>. {rep["n_cases"]} cases. '
           f'Score = the scheme\'s score (lower is better). Runtime: mean seconds per case.</p>',
           _table("Final ranking (the public board)", ["Rank", "Entry", "Row", "Score", "DSC", "NSD", "Runtime (s)",
                                                      "Cases ok", "Submitted (UTC)"], rows, first_text=3)]
    if rep["excluded"]:
        out.append(_table("Excluded submissions (organizers only)", ["Entry", "Reason", "DSC", "NSD"],
                          [[_e(r["name"]), _e(r["exclusion_reason"]), _f(r["dsc"], 4), _f(r["nsd"], 4)]
                           for r in rep["excluded"]], first_text=2))
    return "".join(out) + "</section>"


def _stability(rep: dict[str, Any]) -> str:
    st = rep.get("stability")
    out = ['<section id="stability"><h2>Ranking stability</h2>']
    if not st:
        out.append(f'<p>{_e(rep.get("stability_message") or "not available")}.</p></section>')
        return "".join(out)
    out.append(f'<p>The cases were resampled with replacement {st["n_boot"]} times (seed {rep["seed"]}) and ranked '
               f'by the same scheme. Kendall\'s τ between each resampled ranking and the full one: median '
               f'<strong>{st["tau_median"]:.3f}</strong>, mean {st["tau_mean"]:.3f}, 95 % interval '
               f'[{st["tau_p2_5"]:.3f}, {st["tau_p97_5"]:.3f}] (1 = identical order).</p>')
    n = len(st["entries"])
    rows = [[_e(e["name"]), str(e["rank"]), _f(e["rank_median"], 1), f"[{_f(e['rank_p2_5'], 1)}, {_f(e['rank_p97_5'], 1)}]",
             ", ".join(f"{r}: {f * 100:.1f} %" for r, f in enumerate(e["rank_freq"], start=1) if f > 0)]
            for e in st["entries"]]
    alt = _table("Bootstrap rank distribution per entry", ["Entry", "Full rank", "Median rank", "95 % interval",
                                                           "Rank frequencies"], rows, first_text=1)
    out.append(_figure("fig-stability", blob_plot(st),
                       f"Blob plot (challengeR): each column is an entry ordered by its rank on all cases; a circle's "
                       f"area is how often the entry took that rank over the {st['n_boot']} resamples; the cross is "
                       f"the median rank and the line the 2.5–97.5 % interval ({n} ranked entries).", alt))
    return "".join(out) + "</section>"


def _significance(rep: dict[str, Any]) -> str:
    out = ['<section id="significance"><h2>Significance maps</h2>',
           f'<p>Every ordered pair of ranked entries: one-sided paired Wilcoxon signed-rank test over the cases (failed '
           f'cases charged), p-values adjusted with Holm\'s method over all pairs; significant at α = {rep["alpha"]}.</p>']
    any_map = False
    for metric, sig in (rep.get("significance") or {}).items():
        if not sig:
            continue
        any_map = True
        fid = f"fig-significance-{metric}"
        names = sig["names"]
        rows = []
        for i, a in enumerate(names):
            cells = []
            for j in range(len(names)):
                p = sig["adjusted"][i][j]
                cells.append("–" if i == j else
                             (f'<span class="sig">{_f(p, 4)}*</span>' if sig["significant"][i][j] else _f(p, 4)))
            rows.append([_e(a), *cells])
        alt = _table(f"Holm-adjusted p-values ({metric.upper()}): row better than column; * = significant",
                     ["Row \\ column", *[_e(x) for x in names]], rows)
        wins = [(names[i], sum(bool(v) for v in sig["significant"][i])) for i in range(len(names))]
        out.append(f"<h3>{metric.upper()}</h3>")
        out.append(_figure(fid, significance_svg(sig, fid),
                           f"{metric.upper()}: significantly better than how many others — "
                           + "; ".join(f"{_e(nm)}: {k}" for nm, k in wins) + ".", alt))
    if not any_map:
        out.append(f'<p>{_e(rep.get("stability_message") or "not available")}.</p>')
    return "".join(out) + "</section>"


def _strata(rep: dict[str, Any]) -> str:
    entries = [r for r in rep["ranking"] if not r["excluded"]]
    out = ['<section id="strata"><h2>Per modality and per size class</h2>',
           '<p>Means over the cases of each modality (DSC / NSD; failed cases charged). Size classes: by the structure\'s'
           f' size ({_e(rep.get("size_source") or "case size class")}).</p>']
    mods = rep["modalities"]
    for metric in ("dsc", "nsd"):
        rows = [[_e(r["name"]), *(_f((r["by_modality"].get(m) or {}).get(metric), 4) for m in mods)] for r in entries]
        out.append(_table(f"{metric.upper()} per modality", ["Entry", *[_e(m) for m in mods]], rows))
    rows = [[_e(r["name"]), *(_f((r["by_modality"].get(m) or {}).get("runtime_s"), 2) for m in mods)] for r in entries]
    out.append(_table("Mean runtime per case (s) per modality", ["Entry", *[_e(m) for m in mods]], rows))
    sizes = rep["size_classes"]
    if sizes:
        head = ["Entry", *[f"{_e(s)} {m}" for s in sizes for m in ("DSC", "NSD")]]
        rows = [[_e(r["name"]), *(_f((r["by_size"].get(s) or {}).get(m), 4) for s in sizes for m in ("dsc", "nsd"))]
                for r in entries]
        out.append(_table("DSC and NSD per size class", head, rows))
    return "".join(out) + "</section>"


def _resources(rep: dict[str, Any]) -> str:
    dist = rep["distributions"]
    out = ['<section id="resources"><h2>Runtime and memory</h2>',
           '<p>Distribution over the cases that ended ok of each entry\'s latest run (failed cases are not timed).</p>']
    for key, unit, fid, log in (("runtime_s", "seconds per case", "fig-runtime", True),
                                ("memory_mib", "peak memory per case, MiB", "fig-memory", False)):
        rows = [[_e(d["name"]), *((str(q["n"]), *(_f(q[k], 2) for k in ("min", "q1", "median", "q3", "max", "mean")))
                                  if (q := d.get(key)) else ["0", *["–"] * 6])] for d in dist]
        alt = _table(f"{unit.capitalize()}: quantiles per entry", ["Entry", "Cases", "Min", "Q1", "Median", "Q3", "Max",
                                                                  "Mean"], rows)
        out.append(_figure(fid, box_svg(dist, key, unit, fid, log=log),
                           f"{unit.capitalize()} per entry (box: quartiles, bar: median, whiskers: min–max).", alt))
    return "".join(out) + "</section>"


def _failures(rep: dict[str, Any]) -> str:
    f = rep["failures"]
    share = f"{100 * f['cases_failed'] / f['cases_recorded']:.1f} %" if f["cases_recorded"] else "–"
    items = [(k, float(v)) for k, v in f["by_status"].items()]
    alt = _table("Failed cases by status", ["Status", "Cases"], [[_e(k), str(int(v))] for k, v in items])
    out = ['<section id="failures"><h2>Failures</h2>',
           f'<p>Over the latest attempt of every submission of the track: {f["cases_failed"]} of {f["cases_recorded"]} '
           f'recorded cases failed ({share}).</p>',
           _figure("fig-failures", hbars_svg(items, "Failed cases by reason (status)", "fig-failures"),
                   "Failed cases by status: " + ("; ".join(f"{_e(k)}: {int(v)}" for k, v in items) or "none") + ".",
                   alt)]
    if f["top_reasons"]:
        out.append(_table("Commonest failure messages", ["Status", "Message", "Cases"],
                          [[_e(r["status"]), _e(r["reason"] or "—"), str(r["cases"])] for r in f["top_reasons"]],
                          first_text=2))
    if f["runs_failed"]:
        out.append(_table("Failed runs by reason", ["Reason", "Runs"],
                          [[_e(r["reason"]), str(r["runs"])] for r in f["runs_failed"]]))
    return "".join(out) + "</section>"


def _timeline(rep: dict[str, Any]) -> str:
    s = rep["submissions"]
    states = [k for k in STATE_COLOURS if s["by_state"].get(k)]
    rows = [[_e(d["day"]), str(d["total"]), *(str(d.get(k, 0)) for k in states)] for d in s["days"]]
    alt = _table("Submissions per day", ["Day (UTC)", "Total", *states], rows)
    return ('<section id="timeline"><h2>Submissions over time</h2>'
            f'<p>{s["n_submissions"]} submissions by {s["n_teams"]} teams from {_e(s["first"])} to {_e(s["last"])}; '
            + ", ".join(f"{v} {k}" for k, v in s["by_state"].items()) + ".</p>"
            + _figure("fig-timeline", timeline_svg(s["days"], states),
                      f"Submissions per day (UTC), stacked by final state, over {len(s['days'])} days.", alt)
            + (_table("Submissions per team", ["Team", "Submissions", "Succeeded"],
                      [[_e(t["team"]), str(t["submissions"]), str(t["succeeded"])] for t in s.get("per_team", [])])
               if s.get("per_team") else "")
            + "</section>")


SECTIONS = (("design", "Challenge design and assessment"), ("testset", "Test set"), ("ranking", "Ranking"),
            ("stability", "Ranking stability"), ("significance", "Significance maps"),
            ("strata", "Per modality and per size class"), ("resources", "Runtime and memory"),
            ("failures", "Failures"), ("timeline", "Submissions over time"))


def render_report(rep: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML document."""
    title = f"{rep['challenge']['title']} — {rep['track']['title']}: challenge report"
    toc = "".join(f'<li><a href="#{sid}">{_e(name)}</a></li>' for sid, name in SECTIONS)
    body = "".join(f(rep) for f in (_design, _testset, _ranking, _stability, _significance, _strata, _resources,
                                    _failures, _timeline))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body><main>"
            f"<h1>{_e(title)}</h1>"
            f'<p class="muted">Generated by SegArena on {_e(rep["generated_at"])} (UTC) from the platform\'s database; '
            f'report format {rep["report_version"]}. Structured after the BIAS reporting guideline and challengeR.</p>'
            f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>'
            f"{body}</main></body></html>")
