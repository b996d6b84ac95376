"""Sign-up → approval → sign in → submission → result page, in real headless Chromium (Debian's /usr/bin/chromium
via Playwright) against uvicorn on 127.0.0.1 with a seeded SQLite database.

The participant signs up on the page and gets a claim link; an organizer (another browser) approves on the organizer
page; the claim link (code in the fragment) yields the token once and signs the browser in; the terms are accepted
with the page's button; the upload goes through the API with the claimed token; "My page" shows the queued submission
and follows it live to ``succeeded``; the result page shows overall, per-modality and per-case rows as the track's
feedback policy allows. Dates are shown in the browser's time zone (Asia/Kolkata here), the UTC text kept as the
tooltip.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import finish_run, make_image_tar, seed
from tests.conftest import require
from tests.leaderboard.test_browser_leaderboard import ARGS, CHROMIUM
from tests.servers import ThreadServer

pytestmark = pytest.mark.browser


@pytest.fixture
def server(settings):
    from server.app import create_app

    with ThreadServer(create_app(settings)) as srv:
        yield srv


@pytest.fixture
def browser():
    require(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def clients():
    made: list[httpx.Client] = []
    yield made
    for c in made:
        c.close()


def test_signup_approval_submission_result(server, settings, browser, clients):
    w = seed(settings.database_url)
    base = server.url
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {w.token_org}"}) as org_api:
        org_api.patch("/api/challenges/cvpr24/participation",
                      json={"terms": "Use no external test data."}).raise_for_status()

    # 1. the participant signs up on the page
    part = browser.new_context(locale="en-US", timezone_id="Asia/Kolkata")
    pg = part.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{base}/challenges/cvpr24/signup")
    pg.fill("#name", "Pia Participant")
    pg.fill("#email", "pia@example.org")
    pg.fill("#affiliation", "Pia Lab")
    pg.fill("#team_name", "Pixel Pushers")
    pg.click("#signup-form button[type=submit]")
    assert "waits for the organizers' decision" in pg.inner_text("#signup-done")
    code = pg.input_value("#claim-code")
    link = pg.get_attribute("#claim-link", "href")
    assert code.startswith("sac_") and link == f"/signup/claim#code={code}"

    # before approval the claim link says "pending"
    pg.goto(base + link)
    assert pg.input_value("#claim_code") == code and "#code" not in pg.url  # the script took it out of the URL
    pg.click("#claim-form button[type=submit]")
    assert pg.get_attribute("#claim-state", "data-state") == "pending"

    # 2. an organizer approves on the organizer page
    org = browser.new_context(locale="en-US", timezone_id="Asia/Kolkata")
    opg = org.new_page()
    opg.goto(f"{base}/login?next=/admin/challenges/cvpr24/signups")
    opg.fill("#token", w.token_org)
    opg.click("form button[type=submit]")
    row = opg.locator("#signups tbody tr", has_text="pia@example.org")
    assert "Pixel Pushers" in row.inner_text() and "new team" in row.inner_text()
    sid = row.get_attribute("data-id")
    opg.click(f"#approve-{sid}")
    assert "approved" in opg.inner_text("#decision-message") and "Pixel Pushers" in opg.inner_text("#decision-message")
    # a refusal with a reason, from the same page
    other = httpx.post(f"{base}/api/challenges/cvpr24/signups",
                       json={"name": "Spam", "email": "spam@example.org", "team_name": "Spam Team"}).json()
    opg.goto(f"{base}/admin/challenges/cvpr24/signups")
    opg.fill(f"#reason-{other['id']}", "not a research group")
    opg.click(f"#refuse-{other['id']}")
    assert "refused" in opg.inner_text("#decision-message")

    # 3. the claim link gets the token once and signs the browser in
    pg.goto(base + "/")
    pg.goto(base + link)
    pg.click("#claim-form button[type=submit]")
    assert pg.get_attribute("#claim-state", "data-state") == "approved"
    token = pg.input_value("#token")
    assert token.startswith("sa_")
    pg.click("#to-my-page")
    assert pg.url.endswith("/me") and "Pixel Pushers" in pg.inner_text("h1")
    assert pg.is_visible("#join-code") and len(pg.inner_text("#join-code")) >= 16
    # the token cannot be claimed twice
    assert httpx.post(f"{base}/api/signups/claim", json={"claim_code": code}).status_code == 410

    # 4. the terms: refused before, accepted with the page's button
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    clients.append(api)
    archive = make_image_tar(salt="browser-signup")
    url = "/api/challenges/cvpr24/tracks/main/submissions"
    headers = {"Content-Type": "application/x-tar"}
    r = api.post(url, content=archive, headers=headers)
    assert r.status_code == 403 and r.json()["code"] == "terms_not_accepted"
    pg.click("#terms-cvpr24")
    assert "Use no external test data." in pg.inner_text("#terms-text")
    pg.click("#accept-terms")
    assert "You accepted these terms" in pg.inner_text("#terms-accepted")

    # 5. the submission (upload through the API), followed live on My page
    r = api.post(url, content=archive, headers=headers, params={"label": "first try"})
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    pg.goto(f"{base}/me")
    sub_row = pg.locator(f'#my-submissions tr[data-id="{sub_id}"]')
    assert "queued" in sub_row.locator(".c-state").text_content()
    assert re.match(r"position 1 of \d+", sub_row.locator(".c-queue").inner_text())
    quota = pg.locator('#quota tr[data-track="cvpr24/main"]')
    assert quota.locator(".left").inner_text() == "4"  # quota 5, one used
    finish_run(settings.database_url, sub_id, state="succeeded", dsc=0.8126, nsd=0.75, cases_total=3, runtime_s=2.0,
               cases=[{"case_id": "2DBox_CT_0001", "modality": "CT", "dsc": 0.9, "nsd": 0.8},
                      {"case_id": "2DBox_MR_0002", "modality": "MR", "dsc": 0.725, "nsd": 0.7},
                      {"case_id": "3DBox_CT_0003", "modality": "CT", "status": "timeout", "dsc": 0, "nsd": 0,
                       "reason": "case 3DBox_CT_0003: SECRET container text", "exit_code": None}])
    pg.wait_for_function(f"""() => document.querySelector('#my-submissions tr[data-id="{sub_id}"] .c-state')
                                     .textContent.trim() === 'succeeded'""", timeout=20000)
    assert sub_row.locator(".c-dsc").inner_text() == "0.813"

    # 6. the result page: overall, per modality, per case (feedback: summary, so no per-case scores or container text)
    pg.click(f'#my-submissions tr[data-id="{sub_id}"] a')
    assert pg.text_content("#state") == "succeeded" and pg.inner_text("#dsc") == "0.813"
    mods = pg.eval_on_selector_all("#modalities tbody tr", "rs => rs.map(r => r.cells[0].textContent.trim())")
    assert sorted(mods) == ["CT", "MR"]
    cases = pg.eval_on_selector_all("#cases tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
    assert len(cases) == 3
    timeout_row = next(c for c in cases if c[0] == "3DBox_CT_0003")
    assert timeout_row[2] == "timeout" and timeout_row[3] == "" and "time limit exceeded" in timeout_row[6]
    assert "SECRET" not in pg.content()
    assert "per-case scores" in pg.inner_text("#feedback-note")
    # another team's submission is the same 404 as a missing one
    bob = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {w.token_b}"}, timeout=120)
    clients.append(bob)
    bob.post("/api/challenges/cvpr24/terms/accept").raise_for_status()
    b_sub = bob.post(url, content=make_image_tar(salt="team-b"), headers=headers).json()["id"]
    assert pg.goto(f"{base}/me/submissions/{b_sub}").status == 404

    # the result page follows a queued submission live too (its JSON), then shows the scores
    second = api.post(url, content=make_image_tar(salt="browser-signup-2"), headers=headers).json()["id"]
    pg.goto(f"{base}/me/submissions/{second}")
    assert pg.text_content("#state") == "queued" and pg.inner_text("#queue").startswith("position ")
    finish_run(settings.database_url, second, state="succeeded", dsc=0.5, nsd=0.5, cases_total=1, runtime_s=1.0,
               cases=[{"case_id": "2DBox_US_0004", "modality": "US", "dsc": 0.5, "nsd": 0.5}])
    pg.wait_for_selector("#dsc", timeout=20000)
    assert pg.text_content("#state") == "succeeded" and pg.inner_text("#dsc") == "0.500"

    # 7. dates in the viewer's time zone, the UTC text kept as the tooltip
    pg.goto(f"{base}/me/submissions/{sub_id}")
    pg.wait_for_selector("time[data-local]", state="attached")
    shown = pg.eval_on_selector_all("time[datetime]", "ts => ts.map(t => [t.getAttribute('datetime'), t.title, "
                                    "t.textContent])")
    assert shown and all(dt.endswith("Z") and title.endswith("UTC") and text != title for dt, title, text in shown)
    assert any("GMT+5:30" in text for _, _, text in shown)
    assert errors == []

    # 8. the participant pages pass the accessibility audit (axe-core, WCAG 2.x A/AA: no serious or critical issue)
    from tests.accessibility.test_axe_pages import audit, serious

    found = {}
    for who, tab, path in [("participant", pg, "/me"), ("participant", pg, f"/me/submissions/{sub_id}"),
                           ("participant", pg, "/challenges/cvpr24/terms"), ("participant", pg, "/signup/claim"),
                           ("participant", pg, "/challenges/cvpr24/signup"),
                           ("organizer", opg, "/admin/challenges/cvpr24/signups?state=all")]:
        assert tab.goto(base + path).status == 200, path
        bad = serious(audit(tab))
        if bad:
            found[f"{who} {path}"] = bad
    assert found == {}, found
    part.close()
    org.close()
