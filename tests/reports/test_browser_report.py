"""The challenge report opened in real headless Chromium from a file, offline: every figure is drawn and described by
its numbers, axe-core finds no serious or critical violation, and it prints to PDF (print stylesheet)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.accessibility.test_axe_pages import audit, serious
from tests.conftest import require
from tests.leaderboard.test_browser_leaderboard import ARGS, CHROMIUM
from tests.reports.test_report_api import ORG, PATH, seeded  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser

FIGURES = ("fig-stability", "fig-significance-dsc", "fig-significance-nsd", "fig-runtime", "fig-memory",
           "fig-failures", "fig-timeline")


def test_report_renders_offline_with_described_figures_and_prints(seeded, tmp_path):
    require(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    from segarena.report_html import render_report

    rep = seeded.get(PATH, headers={"Authorization": f"Bearer {ORG}"}).json()
    out = tmp_path / "report.html"
    out.write_text(render_report(rep), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        requests: list[str] = []
        pg.on("request", lambda req: requests.append(req.url))
        pg.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())  # offline: anything but the file fails
        pg.goto(out.as_uri())
        assert requests == [out.as_uri()], requests  # nothing but the file itself was loaded
        assert pg.title().endswith("challenge report")
        for fid in FIGURES:
            svg = pg.locator(f"#{fid} svg")
            assert svg.count() == 1, fid
            box = svg.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 50, (fid, box)
            assert pg.locator(f"#{fid} svg *").count() > 3, f"{fid} draws nothing"
            alt = pg.inner_text(f"#{fid}-alt")
            assert re.search(r"\d", alt), f"{fid}: text alternative without numbers"
            assert svg.get_attribute("aria-describedby") == f"{fid}-alt" and svg.get_attribute("aria-label")
        # blob plot: one column per ranked entry with a median cross; circles for the rank frequencies
        n_ranked = len(rep["stability"]["entries"])
        assert pg.locator("#fig-stability svg path").count() == n_ranked
        assert pg.locator("#fig-stability svg circle").count() >= n_ranked
        # significance map: n × n cells
        assert pg.locator("#fig-significance-dsc svg rect").count() == n_ranked ** 2
        found = serious(audit(pg))
        assert found == [], found
        # print: the contents list is hidden, the numbers stay; a PDF comes out
        pg.emulate_media(media="print")
        assert pg.is_hidden("nav.toc") and pg.is_visible("#fig-stability-alt")
        pdf = pg.pdf(format="A4")
        assert pdf[:5] == b"%PDF-" and len(pdf) > 20_000
        browser.close()
