"""Accessibility audit of the public and organizer pages in real headless Chromium.

axe-core (vendored: tests/accessibility/axe.min.js, MPL-2.0, licence next to it; no network) is injected into each
page and run with the WCAG 2.x A/AA rules; no serious or critical violation may remain. The board is sorted from
the keyboard (Tab to a column header, Enter) and filtered with the keyboard (the view select), and every plot carries
a text alternative with its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.models import Role
from tests.conftest import require
from tests.leaderboard.test_browser_leaderboard import ARGS, CHROMIUM, server  # noqa: F401  (fixture)
from tests.leaderboard_helpers import add_member

pytestmark = pytest.mark.browser

AXE = Path(__file__).with_name("axe.min.js")
ORGANIZER_TOKEN = "sa_axe_organizer_token_0123456789abcdef"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

PUBLIC = ["/", "/challenges/demo", "/challenges/demo/tracks/main", "/challenges/demo/tracks/booster",
          "/challenges/demo/tracks/repro", "/login", "/status", "/challenges/demo/signup", "/signup/claim",
          "/challenges/demo/terms"]
PARTICIPANT_TOKEN = "sa_axe_participant_token_0123456789abc"
ORGANIZER = ["/", "/challenges/demo", "/challenges/demo/tracks/main", "/challenges/demo/tracks/main?view=size",
             "/admin/challenges/demo/signups", "/admin/challenges/demo/notifications", "/admin/runs/1",
             "/submissions/1"]


def audit(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations of the loaded page (WCAG 2.x A and AA rules), each with its impact and nodes."""
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    res = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]} for v in res["violations"]]


def _summary(found: dict[str, list[dict[str, Any]]]) -> str:
    return "\n".join(f"{path}: {v['id']} ({v['impact']}) {v['help']} at {v['nodes']}" for path, vs in found.items()
                     for v in vs)


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


@pytest.fixture(scope="module")
def _chromium():
    """One Chromium per module (a launch costs more CPU than a page audit); each test gets a context of its own."""
    require(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def browser(_chromium):
    """A fresh browser context (no cookies, storage or pages of another test), used like a browser."""
    context = _chromium.new_context()
    yield context
    context.close()


def _check_pages(pg: Any, base: str, paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    found = {}
    for path in paths:
        resp = pg.goto(base + path)
        assert resp is not None and resp.status == 200, (path, resp and resp.status)
        assert pg.url.split("?")[0] == (base + path).split("?")[0], f"{path} redirected to {pg.url}"  # not to /login
        bad = serious(audit(pg))
        if bad:
            found[path] = bad
    return found


def test_public_pages_have_no_serious_violations(server, browser):
    pg = browser.new_page()
    found = _check_pages(pg, server, PUBLIC)
    assert found == {}, _summary(found)


def test_organizer_pages_have_no_serious_violations(server, browser, settings):
    add_member(settings.database_url, role=Role.organizer, token=ORGANIZER_TOKEN, name="Org A11y")
    pg = browser.new_page()
    _sign_in(pg, server, ORGANIZER_TOKEN)
    found = _check_pages(pg, server, ORGANIZER)
    assert found == {}, _summary(found)


def _sign_in(pg: Any, base: str, token: str) -> None:
    pg.goto(f"{base}/login")
    pg.fill("#token", token)
    pg.click("form.form button[type=submit]")
    pg.wait_for_load_state()


def test_participant_pages_have_no_serious_violations(server, browser, settings):
    """A signed-in participant's pages (leaderboard_web/participants.py): /me, a result page, the terms."""
    from sqlalchemy import select

    from api.db import session_scope
    from api.models import Challenge, Submission

    with session_scope(settings.database_url) as s:
        sub = s.scalar(select(Submission).where(Submission.is_baseline.is_(False)).order_by(Submission.id))
        team_id, sub_id = sub.team_id, sub.id
        s.scalar(select(Challenge).where(Challenge.slug == "demo")).terms = "Be fair. Publish your method."
    add_member(settings.database_url, role=Role.participant, token=PARTICIPANT_TOKEN, team_id=team_id,
               name="Part A11y")
    pg = browser.new_page()
    _sign_in(pg, server, PARTICIPANT_TOKEN)
    found = _check_pages(pg, server, ["/me", f"/me/submissions/{sub_id}", "/challenges/demo/terms",
                                      "/challenges/demo", f"/submissions/{sub_id}"])
    assert found == {}, _summary(found)


def test_audit_finds_a_planted_violation(server, browser):
    """The audit itself works: an image without alt text and an unlabeled input are reported."""
    pg = browser.new_page()
    pg.goto(f"{server}/login")
    pg.evaluate("""() => { const i = document.createElement('input'); i.type = 'text'; document.body.append(i);
                          const b = document.createElement('button'); document.body.append(b); }""")
    ids = {v["id"] for v in serious(audit(pg))}
    assert {"label", "button-name"} <= ids


def _column(pg: Any, key: str) -> list[str]:
    idx = pg.eval_on_selector_all("#board thead tr.cols th", f"ths => ths.findIndex(t => t.dataset.key === {json.dumps(key)})")
    return pg.eval_on_selector_all("#board tbody tr", f"rows => rows.map(r => r.cells[{idx}].textContent.trim())")


def test_board_sorts_and_filters_from_the_keyboard(server, browser):
    pg = browser.new_page()
    pg.goto(f"{server}/challenges/demo/tracks/main")
    target = '#board thead th[data-key="runtime_s"] button'
    # Tab through the page until the runtime header's button has the focus (no mouse, no programmatic focus)
    for _ in range(200):
        pg.keyboard.press("Tab")
        if pg.evaluate(f"() => document.activeElement === document.querySelector({json.dumps(target)})"):
            break
    else:
        pytest.fail("the runtime column header cannot be reached with Tab")
    pg.keyboard.press("Enter")
    rts = [float(v) for v in _column(pg, "runtime_s")]
    assert rts == sorted(rts)
    assert pg.get_attribute('#board thead th[data-key="runtime_s"]', "aria-sort") == "ascending"
    pg.keyboard.press("Enter")
    assert pg.get_attribute('#board thead th[data-key="runtime_s"]', "aria-sort") == "descending"
    rts = [float(v) for v in _column(pg, "runtime_s")]
    assert rts == sorted(rts, reverse=True)
    # the modality filter: focus the select with Tab (backwards from the table) and pick with the arrow keys
    for _ in range(200):
        pg.keyboard.press("Shift+Tab")
        if pg.evaluate("() => document.activeElement && document.activeElement.id === 'view'"):
            break
    else:
        pytest.fail("the view filter cannot be reached with Tab")
    before = pg.evaluate("() => document.getElementById('view').value")
    pg.keyboard.press("ArrowDown")
    after = pg.evaluate("() => document.getElementById('view').value")
    assert after != before
    assert f"view={after}" in pg.url or after == "all"


def test_plots_carry_text_alternatives_with_numbers(server, browser):
    pg = browser.new_page()
    pg.goto(f"{server}/challenges/demo/tracks/main")
    svgs = pg.eval_on_selector_all("svg[role=img]", """els => els.map(s => {
        const ids = (s.getAttribute('aria-describedby') || '').split(/\\s+/).filter(Boolean);
        const desc = ids.map(i => (document.getElementById(i) || {}).textContent || '').join(' ');
        const own = (s.querySelector('desc') || {}).textContent || '';
        return {label: s.getAttribute('aria-label') || '', desc: desc + ' ' + own};
    })""")
    assert len(svgs) >= 2
    import re

    for s in svgs:
        assert s["label"], s
        assert re.search(r"\d\.\d", s["desc"]), f"plot {s['label']!r} has no text alternative with its numbers"
