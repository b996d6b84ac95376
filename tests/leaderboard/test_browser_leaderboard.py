"""Leaderboard pages in real headless Chromium (Debian's /usr/bin/chromium via Playwright).

A uvicorn server runs in a thread on 127.0.0.1 with a seeded SQLite database; the browser sorts a
column, filters a modality, downloads the CSV and compares it with the JSON API.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require
from tests.servers import ThreadServer

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SEGARENA_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def server(settings):
    from api.db import session_scope
    from leaderboard_web.seed import seed_demo
    from tests.leaderboard_helpers import make_app

    app = make_app(settings)
    with session_scope(settings.database_url) as s:
        seed_demo(s, teams=8, cases=27)
    with ThreadServer(app) as srv:
        yield srv.url


@pytest.fixture
def page():
    require(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
        pg = ctx.new_page()
        yield pg
        ctx.close()
        browser.close()


def _column_values(page, key: str) -> list[str]:
    idx = page.eval_on_selector_all("#board thead tr.cols th", f"ths => ths.findIndex(t => t.dataset.key === {json.dumps(key)})")
    return page.eval_on_selector_all("#board tbody tr", f"rows => rows.map(r => r.cells[{idx}].textContent.trim())")


def test_sort_filter_and_csv_download(server, page, tmp_path):
    url = f"{server}/challenges/demo/tracks/main"
    page.goto(url)
    assert "Rank-then-aggregate" in page.inner_text("#scheme")
    # server order: by rank
    ranks = [v for v in _column_values(page, "rank") if v]
    assert ranks == sorted(ranks, key=float)

    # sort by runtime: first click = fastest first, second = slowest first; empty cells last
    page.click('#board thead th[data-key="runtime_s"] button')
    rts = [float(v) for v in _column_values(page, "runtime_s")]
    assert rts == sorted(rts)
    assert page.get_attribute('#board thead th[data-key="runtime_s"]', "aria-sort") == "ascending"
    page.click('#board thead th[data-key="runtime_s"] button')
    rts = [float(v) for v in _column_values(page, "runtime_s")]
    assert rts == sorted(rts, reverse=True)
    # sort by CT DSC: best first
    page.click('#board thead th[data-key="CT:dsc"] button')
    ct = [float(v) for v in _column_values(page, "CT:dsc")]
    assert ct == sorted(ct, reverse=True) and len(ct) == 9
    # sort by team name (text)
    page.click('#board thead th[data-key="team"] button')
    teams = _column_values(page, "team")
    assert teams == sorted(teams, key=str.lower)

    # filter a modality: only US columns stay among the per-modality ones
    assert page.is_visible('#board thead th[data-key="CT:dsc"]')
    page.select_option("#view", "US")
    assert page.is_visible('#board thead th[data-key="US:dsc"]')
    assert page.is_hidden('#board thead th[data-key="CT:dsc"]')
    assert page.is_hidden('#board tbody td[data-mod="CT"]')
    assert page.is_visible('#board thead th[data-key="dsc"]')  # overall stays
    assert page.is_hidden('#board thead th[data-key="size:small:dsc"]')
    assert "view=US" in page.url
    page.select_option("#view", "size")
    assert page.is_visible('#board thead th[data-key="size:small:dsc"]')
    assert page.is_hidden('#board thead th[data-key="US:dsc"]')
    page.select_option("#view", "all")
    assert page.is_visible('#board thead th[data-key="CT:dsc"]')

    # download the CSV and compare with the JSON API
    with page.expect_download() as dl:
        page.click("#csv-link")
    path = tmp_path / "board.csv"
    dl.value.save_as(path)
    table = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    with urllib.request.urlopen(f"{server}/api/challenges/demo/tracks/main/leaderboard") as r:
        board = json.loads(r.read())
    keys = [c["key"] for c in board["columns"]]
    assert len(table[0]) == len(keys) and len(table) - 1 == len(board["rows"])
    header_count = page.eval_on_selector_all("#board thead tr.cols th", "ths => ths.length")
    assert header_count == len(keys)  # the CSV has exactly the page's columns
    for row, line in zip(board["rows"], table[1:]):
        for key, col, text in zip(keys, board["columns"], line):
            v = row[key]
            if v is None:
                assert text == ""
            elif col["type"] in ("score", "runtime", "delta", "ratio", "int"):
                assert float(text) == pytest.approx(v, abs=5e-4)
            else:
                assert text == str(v)
    # the visible cells match the CSV too (row order as served: by rank)
    page.goto(url)
    first_row = page.eval_on_selector_all("#board tbody tr:first-child td", "tds => tds.map(t => t.innerText.trim())")
    assert first_row == [c.strip() for c in table[1]]


def test_readable_without_javascript_and_offline(server, settings):
    require(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(java_script_enabled=False)
        pg = ctx.new_page()
        external = []
        pg.on("request", lambda req: external.append(req.url) if not req.url.startswith(server) else None)
        pg.goto(f"{server}/challenges/demo/tracks/booster")
        text = pg.inner_text("#board")
        assert "Speed-up ×" in text and "DSC" in text
        assert pg.locator("svg").count() >= 2  # plots are server-side SVG
        pg.goto(f"{server}/challenges/demo/tracks/repro")
        assert "reproduced" in pg.inner_text("#board")
        ctx.close()
        browser.close()
    assert external == []
