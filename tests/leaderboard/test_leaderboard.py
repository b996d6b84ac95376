"""The leaderboard read model and its HTTP surface (JSON, CSV, pages) on a real SQLite database."""

from __future__ import annotations

import csv
import io
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api import leaderboard as lb
from api.db import session_scope
from api.models import Feedback, Role, RowPolicy, Submission, TrackKind, Visibility
from leaderboard_web.seed import add_submission, seed_demo
from tests.leaderboard_helpers import add_member, arr, at, cases, make_app, make_challenge, make_team, sign_in

NAN = float("nan")
ORG = "sa_organizer-token-for-tests"
PART = "sa_participant-token-for-tests"


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def org(client: TestClient) -> dict:
    return {"Authorization": f"Bearer {ORG}"}


def _fixture_track(url, **track_kw):
    """The ranking-scheme fixture on a real track: 3 teams × 4 cases, C fails case 4 (see test_ranking)."""
    cs = cases(4)
    with session_scope(url) as s:
        tr = make_challenge(s, tracks={"main": track_kw})["main"]
        rt = np.ones(4)
        rows = {
            "A": arr(0.60, 0.62, 0.58, 0.50),
            "B": arr(0.55, 0.57, 0.56, 0.96),
            "C": arr(0.80, 0.82, 0.78, 0.0),
        }
        ids = {}
        for i, (name, d) in enumerate(rows.items()):
            team = make_team(s, name)
            failed = np.array([False, False, False, name == "C"])
            ids[name] = add_submission(s, track=tr, team=team, cases=cs, dsc=d, nsd=d, runtime=rt, failed=failed,
                                       label="v1", created_at=at(i)).id
            ids[name + "_team"] = team.id
        return tr.id, ids, cs


def test_rank_then_aggregate_on_the_fixture(client, settings):
    # DSC = NSD and every runtime is 1 s, so per case: DSC and NSD ranks as in test_ranking, runtime ranks
    # all 1 except C's failed case 4 (worst: 3).
    #   A: DSC 2,2,2,2  NSD 2,2,2,2  time 1,1,1,1 → 20/12 = 1.667
    #   B: DSC 3,3,3,1  NSD 3,3,3,1  time 1,1,1,1 → 24/12 = 2.000
    #   C: DSC 1,1,1,3  NSD 1,1,1,3  time 1,1,1,3 → 18/12 = 1.500      → ranks [A, B, C] = [2, 3, 1]
    _fixture_track(settings.database_url)
    body = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
    ranks = {r["team"]: r["rank"] for r in body["rows"]}
    assert ranks == {"A": 2, "B": 3, "C": 1}
    assert {r["team"]: r["score"] for r in body["rows"]} == {"A": 1.667, "B": 2.0, "C": 1.5}
    assert body["scheme"] == "rank_then_aggregate" and "Rank-then-aggregate" in body["scheme_label"]
    assert body["metric_profile"] == "default" and body["hidden"] is False and body["frozen"] is False
    c = next(r for r in body["rows"] if r["team"] == "C")
    # the failed case counts DSC 0 and the 60 s limit: DSC (0.8+0.82+0.78+0)/4, runtime (1+1+1+60)/4
    assert c["dsc"] == pytest.approx(0.6) and c["runtime_s"] == pytest.approx(15.75) and c["cases_ok"] == 3
    assert c["CT:dsc"] == pytest.approx((0.80 + 0.78) / 2) and c["US:dsc"] == pytest.approx((0.82 + 0.0) / 2)
    page = client.get("/challenges/c1/tracks/main")
    assert page.status_code == 200 and "Rank-then-aggregate" in page.text and "<code>default</code>" in page.text


def test_aggregate_then_rank_on_the_fixture(client, settings):
    # means: DSC = NSD: A 0.575, B 0.660, C 0.600 → ranks 3, 1, 2; runtime: A 1, B 1, C 15.75 → 1, 1, 3
    # mean of metric ranks: A (3+3+1)/3 = 2.33, B 1, C (2+2+3)/3 = 2.33 → [A, B, C] = [2, 1, 2]
    _fixture_track(settings.database_url, ranking_scheme="aggregate_then_rank")
    body = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
    assert {r["team"]: r["rank"] for r in body["rows"]} == {"A": 2, "B": 1, "C": 2}
    assert "Aggregate-then-rank" in client.get("/challenges/c1/tracks/main").text


def test_row_policy_baselines_exclusions_and_attempts(app, settings):
    url = settings.database_url
    cs = cases(6)
    with session_scope(url) as s:
        tr = make_challenge(s)["main"]
        a, b, base = make_team(s, "alpha"), make_team(s, "beta"), make_team(s, "organizers")
        good, bad = np.full(6, 0.9), np.full(6, 0.5)
        a_best = add_submission(s, track=tr, team=a, cases=cs, dsc=good, nsd=good, runtime=np.ones(6), label="best",
                                created_at=at(0)).id
        a_late = add_submission(s, track=tr, team=a, cases=cs, dsc=bad, nsd=bad, runtime=np.ones(6), label="late",
                                created_at=at(5), attempts=2).id  # attempt 1's bogus 1.0 scores must not count
        add_submission(s, track=tr, team=b, cases=cs, dsc=np.full(6, 0.7), nsd=np.full(6, 0.7), runtime=np.ones(6),
                       label="b1", created_at=at(1))
        cheat = add_submission(s, track=tr, team=b, cases=cs, dsc=np.full(6, 0.99), nsd=np.full(6, 0.99),
                               runtime=np.ones(6), label="leaked", created_at=at(2), excluded=True,
                               exclusion_reason="trained on the test set").id
        add_submission(s, track=tr, team=base, cases=cs, dsc=np.full(6, 0.95), nsd=np.full(6, 0.95), runtime=np.ones(6),
                       label="LiteMedSAM", created_at=at(-1), is_baseline=True)
        add_submission(s, track=tr, team=b, cases=cs, dsc=good, nsd=good, runtime=np.ones(6), label="running",
                       created_at=at(3), state="running")
        tr_id = tr.id
    add_member(url, role=Role.organizer, token=ORG)
    with TestClient(app) as client:
        pub = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
        rows = {r["team"]: r for r in pub["rows"]}
        assert rows["alpha"]["submission_id"] == a_best and rows["alpha"]["rank"] == 1
        assert rows["beta"]["label"] == "b1" and rows["beta"]["rank"] == 2  # the excluded one is gone
        assert rows["organizers"]["baseline"] and rows["organizers"]["rank"] is None
        assert rows["organizers"]["entry"] == "baseline"
        assert cheat not in [r["submission_id"] for r in pub["rows"]]
        assert "exclusion_reason" not in pub["rows"][0] and "trained on the test set" not in client.get(
            "/challenges/c1/tracks/main").text
        # organizers see the excluded entry, unranked, with its reason
        orgb = client.get("/api/challenges/c1/tracks/main/leaderboard", headers=org(client)).json()
        ex = next(r for r in orgb["rows"] if r["submission_id"] == cheat)
        assert ex["excluded"] and ex["rank"] is None and ex["exclusion_reason"] == "trained on the test set"
        assert any(c["key"] == "exclusion_reason" for c in orgb["columns"])
        sign_in(client, ORG)
        assert "trained on the test set" in client.get("/challenges/c1/tracks/main").text
        client.cookies.clear()
        # latest policy: alpha's newest succeeded submission (its last attempt: DSC 0.5, not attempt 1's 1.0)
        with session_scope(url) as s:
            s.get(type(s.get(Submission, a_best).track), tr_id).row_policy = RowPolicy.latest
        lb.invalidate(tr_id)
        rows = {r["team"]: r for r in client.get("/api/challenges/c1/tracks/main/leaderboard").json()["rows"]}
        assert rows["alpha"]["submission_id"] == a_late and rows["alpha"]["dsc"] == pytest.approx(0.5)
        assert rows["alpha"]["rank"] == 2 and rows["beta"]["rank"] == 1


def test_hidden_track_is_invisible_to_the_public(app, settings):
    url = settings.database_url
    _fixture_track(url, visibility=Visibility.hidden)
    add_member(url, role=Role.organizer, token=ORG)
    add_member(url, role=Role.participant, token=PART)
    with session_scope(url) as s:
        sub_id = s.query(Submission).first().id
    with TestClient(app) as client:
        for path in ("/api/challenges/c1/tracks/main/leaderboard", "/api/challenges/c1/tracks/main/leaderboard.csv",
                     "/challenges/c1/tracks/main", f"/submissions/{sub_id}"):
            assert client.get(path).status_code == 404, path
            assert client.get(path, headers={"Authorization": f"Bearer {PART}"}).status_code == 404, path
        assert "/tracks/main" not in client.get("/challenges/c1").text
        assert "/tracks/main" not in client.get("/").text
        body = client.get("/api/challenges/c1/tracks/main/leaderboard", headers=org(client)).json()
        assert body["hidden"] is True and len(body["rows"]) == 3
        assert client.get("/api/challenges/c1/tracks/main/leaderboard",
                          headers={"Authorization": "Bearer sa_wrong"}).status_code == 401
        sign_in(client, ORG)
        assert client.get("/challenges/c1/tracks/main").status_code == 200
        assert client.get(f"/submissions/{sub_id}").status_code == 200


def test_frozen_board_stops_at_the_freeze(app, settings):
    url = settings.database_url
    _, ids, cs = _fixture_track(url, visibility=Visibility.frozen)
    with session_scope(url) as s:
        sub = s.get(Submission, ids["A"])
        track = sub.track
        track.closes_at = at(10)
        late = add_submission(s, track=track, team=sub.team, cases=cs, dsc=np.ones(4), nsd=np.ones(4),
                              runtime=np.ones(4), label="after close", created_at=at(11)).id
    with TestClient(app) as client:
        body = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
        assert body["frozen"] is True and body["frozen_at"] == "2026-05-01T10:00:00Z"
        assert late not in [r["submission_id"] for r in body["rows"]]
        assert {r["team"]: r["rank"] for r in body["rows"]} == {"A": 2, "B": 3, "C": 1}
        assert client.get(f"/submissions/{late}").status_code == 404
        # an explicit frozen_at wins, even on a public track
        with session_scope(url) as s:
            t = s.get(Submission, ids["A"]).track
            t.visibility, t.frozen_at = Visibility.public, at(1.5)
        lb.invalidate()
        body = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
        assert sorted(r["team"] for r in body["rows"]) == ["A", "B"]


def test_booster_deltas_against_main(client, settings):
    cs = cases(4)
    with session_scope(settings.database_url) as s:
        trs = make_challenge(s, tracks={"main": {}, "boost": {"kind": TrackKind.booster}})
        team = make_team(s, "daft")
        other = make_team(s, "solo")
        add_submission(s, track=trs["main"], team=team, cases=cs, dsc=np.full(4, 0.7864), nsd=np.full(4, 0.8058),
                       runtime=np.full(4, 14.69), created_at=at(0))
        add_submission(s, track=trs["boost"], team=team, cases=cs, dsc=np.full(4, 0.8329), nsd=np.full(4, 0.8559),
                       runtime=np.full(4, 2.25), created_at=at(1))
        add_submission(s, track=trs["boost"], team=other, cases=cs, dsc=np.full(4, 0.5), nsd=np.full(4, 0.5),
                       runtime=np.full(4, 2.0), created_at=at(1))
    body = client.get("/api/challenges/c1/tracks/boost/leaderboard").json()
    r = next(r for r in body["rows"] if r["team"] == "daft")
    # the DAFT numbers of the CVPR 2024 performance-booster track: 78.64 → 83.29, 80.58 → 85.59, 14.69 s → 2.25 s
    assert r["delta_dsc"] == pytest.approx(0.047, abs=1e-3) and r["delta_nsd"] == pytest.approx(0.050, abs=1e-3)
    assert r["speedup"] == pytest.approx(6.53, abs=0.01)
    solo = next(r for r in body["rows"] if r["team"] == "solo")
    assert solo["delta_dsc"] is None and solo["speedup"] is None
    assert {c["key"] for c in body["columns"]} >= {"delta_dsc", "delta_nsd", "speedup"}
    page = client.get("/challenges/c1/tracks/boost").text
    assert "Speed-up ×" in page and "+0.047" in page and "6.53" in page


def test_reproducibility_verdicts(client, settings):
    cs = cases(20)
    rng = np.random.default_rng(0)
    d = rng.uniform(0.7, 0.9, 20)
    with session_scope(settings.database_url) as s:
        # full feedback: the per-case comparison is public (on summary tracks only organizers see it)
        trs = make_challenge(s, tracks={"main": {"feedback": Feedback.full},
                                        "repro": {"kind": TrackKind.reproducibility, "feedback": Feedback.full}})
        win, rep1, rep2 = make_team(s, "winner"), make_team(s, "repro-good"), make_team(s, "repro-bad")
        orig = add_submission(s, track=trs["main"], team=win, cases=cs, dsc=d, nsd=d, runtime=np.ones(20),
                              label="MedficientSAM", created_at=at(0)).id
        add_submission(s, track=trs["repro"], team=rep1, cases=cs, dsc=d - 0.001, nsd=d + 0.001,
                       runtime=np.full(20, 1.5), reproduces_id=orig, created_at=at(1))
        add_submission(s, track=trs["repro"], team=rep2, cases=cs, dsc=d - 0.05, nsd=d, runtime=np.full(20, 1.0),
                       reproduces_id=orig, created_at=at(2))
    body = client.get("/api/challenges/c1/tracks/repro/leaderboard").json()
    rows = {r["team"]: r for r in body["rows"]}
    good, bad = rows["repro-good"], rows["repro-bad"]
    assert good["verdict"] == "reproduced" and bad["verdict"] == "not reproduced"
    assert good["delta_dsc"] == pytest.approx(-0.001) and good["runtime_ratio"] == pytest.approx(1.5)
    assert bad["delta_dsc"] == pytest.approx(-0.05)
    assert len(good["details"]["cases"]) == 20
    assert good["details"]["cases"][0]["delta_nsd"] == pytest.approx(0.001)
    assert good["reproduces_id"] == orig and "winner" in good["reproduces"]
    assert body["ranked"] is False
    page = client.get("/challenges/c1/tracks/repro").text
    assert "not reproduced" in page and "Per-case differences" in page and cs[0][0] in page


def test_csv_is_exactly_the_page_columns(client, settings):
    with session_scope(settings.database_url) as s:
        seed_demo(s, teams=6, cases=18)
    body = client.get("/api/challenges/demo/tracks/main/leaderboard").json()
    r = client.get("/api/challenges/demo/tracks/main/leaderboard.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    page = client.get("/challenges/demo/tracks/main").text
    head = table[0]
    assert len(head) == len(body["columns"]) and len(table) - 1 == len(body["rows"])
    assert head[:5] == ["Rank", "Team", "Submission", "Entry", "Mean rank"]
    assert "CT DSC" in head and "OCT Time (s)" in head and "small DSC" in head
    for col in body["columns"]:
        assert f'data-key="{col["key"]}"' in page
    for row, line in zip(body["rows"], table[1:]):
        for col, text in zip(body["columns"], line):
            v = row[col["key"]]
            if v is None:
                assert text == ""
            elif col["type"] in ("score", "runtime", "delta", "ratio", "int"):
                assert float(text) == pytest.approx(v, abs=5e-4), (col["key"], text, v)
            else:
                assert text == str(v)
            assert f">{text}<" in page or col["key"] in ("team", "entry") or text == ""
    # modalities appear in the canonical order of the challenge tables
    assert body["modalities"] == ["CT", "MR", "PET", "US", "X-Ray", "Endoscopy", "Fundus", "Microscopy", "OCT"]


def test_cache_etag_and_invalidation(client, settings):
    url = settings.database_url
    _, ids, cs = _fixture_track(url)
    path = "/api/challenges/c1/tracks/main/leaderboard"
    r1 = client.get(path)
    etag = r1.headers["etag"]
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    gz = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("content-encoding") == "gzip" and gz.json() == r1.json()
    # a new result shows after invalidate() (what the worker's leaderboard refresh calls)
    with session_scope(url) as s:
        sub = s.get(Submission, ids["B"])
        add_submission(s, track=sub.track, team=sub.team, cases=cs, dsc=np.ones(4), nsd=np.ones(4),
                       runtime=np.full(4, 0.5), label="v2", created_at=at(9))
    lb.invalidate(sub.track_id)
    r2 = client.get(path)
    assert r2.headers["etag"] != etag
    assert next(r for r in r2.json()["rows"] if r["team"] == "B")["rank"] == 1
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 200


def test_cache_revalidates_after_ttl_without_invalidate(client, settings, monkeypatch):
    from api.leaderboard import cache

    url = settings.database_url
    _, ids, cs = _fixture_track(url)
    path = "/api/challenges/c1/tracks/main/leaderboard"
    assert len(client.get(path).json()["rows"]) == 3
    with session_scope(url) as s:  # another process (a worker) changes the data; no invalidate() here
        s.get(Submission, ids["A"]).excluded = True
    monkeypatch.setattr(cache, "CACHE_TTL_S", 0.0)
    assert len(client.get(path).json()["rows"]) == 2


def test_unknown_challenge_or_track_is_404_json_and_html(client):
    r = client.get("/api/challenges/nope/tracks/main/leaderboard")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get("/challenges/nope/tracks/x").status_code == 404
    assert "Not found" in client.get("/challenges/nope").text
    assert client.get("/submissions/999999").status_code == 404
    assert client.get("/submissions/notanumber").status_code == 422


def test_submission_page_public_fields(app, settings):
    url = settings.database_url
    _, ids, _ = _fixture_track(url)
    with session_scope(url) as s:
        s.get(Submission, ids["B"]).excluded = True
        s.get(Submission, ids["B"]).exclusion_reason = "secret reason"
    add_member(url, role=Role.organizer, token=ORG)
    with TestClient(app) as client:
        r = client.get(f"/submissions/{ids['A']}")
        assert r.status_code == 200 and "0.575" in r.text and 'id="team">A' in r.text
        assert "/admin/runs/" not in r.text
        assert client.get(f"/submissions/{ids['B']}").status_code == 404
        sign_in(client, ORG)
        r = client.get(f"/submissions/{ids['B']}")
        assert r.status_code == 200 and "secret reason" in r.text and "/admin/runs/" in r.text


def test_login_cookie_and_admin_run_page(app, settings):
    url = settings.database_url
    _, ids, _ = _fixture_track(url)
    add_member(url, role=Role.organizer, token=ORG)
    add_member(url, role=Role.participant, token=PART)
    with session_scope(url) as s:
        run_id = s.get(Submission, ids["C"]).runs[-1].id
    with TestClient(app) as client:
        r = client.get(f"/admin/runs/{run_id}")
        assert r.status_code == 401 and "Sign in" in r.text
        bad = sign_in(client, "sa_nope", next="/admin/runs/1")
        assert bad.status_code == 401 and "unknown or revoked" in bad.text
        r = sign_in(client, PART, next=f"/admin/runs/{run_id}")
        assert r.status_code == 303 and r.headers["location"] == f"/admin/runs/{run_id}"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert client.get(f"/admin/runs/{run_id}").status_code == 403
        client.cookies.clear()
        r = sign_in(client, ORG, next="//evil.example/x")
        assert r.headers["location"] == "/"  # no open redirect
        page = client.get(f"/admin/runs/{run_id}")
        assert page.status_code == 200
        # per-case table: status, runtime, memory, reason, log tail
        assert "timeout" in page.text and "exceeded the 60 s time limit" in page.text and "Killed" in page.text
        assert "MiB" in page.text and "Run log" in page.text
        assert client.get("/admin/runs/999999").status_code == 404
    with TestClient(app) as fresh:
        assert fresh.get(f"/admin/runs/{run_id}", headers={"Authorization": f"Bearer {ORG}"}).status_code == 200


def test_stability_endpoint(app, settings):
    url = settings.database_url
    with session_scope(url) as s:
        seed_demo(s, teams=6, cases=27)
    add_member(url, role=Role.organizer, token=ORG)
    add_member(url, role=Role.participant, token=PART)
    path = "/api/challenges/demo/tracks/main/stability"
    with TestClient(app) as client:
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {PART}"}).status_code == 403
        r = client.get(path + "?n_boot=200", headers=org(client))
        assert r.status_code == 200
        body = r.json()
        assert body["bootstrap"]["n_boot"] == 200 and -1 <= body["bootstrap"]["tau_mean"] <= 1
        assert len(body["bootstrap"]["entries"]) == 6 and [e["rank"] for e in body["bootstrap"]["entries"]] == sorted(
            e["rank"] for e in body["bootstrap"]["entries"])
        sig = body["significance"]
        assert sig["correction"] == "Holm" and len(sig["significant"]) == 6 and sig["pvalues"][0][0] is None
        assert client.get(path + "?metric=bogus", headers=org(client)).status_code == 422
        assert client.get(path + "?n_boot=1", headers=org(client)).status_code == 422
        sign_in(client, ORG)
        page = client.get("/challenges/demo/tracks/main").text
        assert "Ranking stability" in page and "Kendall" in page and "Significance map" in page


def test_demo_pages_render(client, settings):
    with session_scope(settings.database_url) as s:
        seed_demo(s, teams=5, cases=18)
    for path in ("/", "/challenges/demo", "/challenges/demo/tracks/main", "/challenges/demo/tracks/booster",
                 "/challenges/demo/tracks/repro", "/login", "/submissions/1"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "<svg" in r.text or path in ("/", "/challenges/demo", "/login", "/submissions/1")
        assert "cdn" not in r.text.lower() and "https://" not in r.text, path
    css = client.get("/assets/style.css")
    assert css.status_code == 200 and "sticky" in css.text
    assert client.get("/assets/nope.css").status_code == 404


@pytest.mark.postgres
def test_read_model_on_postgres(postgres_url):
    from api.db import migrate

    migrate(postgres_url)
    with session_scope(postgres_url) as s:
        info = seed_demo(s, teams=4, cases=18)
    with session_scope(postgres_url) as s:
        track = lb.find_track(s, "demo", "main")
        board = lb.build_board(s, track, organizer=True).to_dict()
        v1 = lb.board_version(s, track)
        assert [r["rank"] for r in board["rows"] if r["rank"]] == sorted(r["rank"] for r in board["rows"] if r["rank"])
        assert len(board["rows"]) == 5  # four teams and the baseline
        sub = s.get(Submission, info["submissions"]["main"][0])
        sub.label = "renamed"
        s.flush()
        s.commit()
        assert lb.board_version(s, track) != v1
        rep = lb.build_board(s, lb.find_track(s, "demo", "repro")).to_dict()
        assert {r["verdict"] for r in rep["rows"]} == {"reproduced", "not reproduced"}


def test_seed_is_deterministic(settings):
    from api.db import migrate

    migrate(settings.database_url)
    with session_scope(settings.database_url) as s:
        seed_demo(s, teams=3, cases=9, slug="d1")
        seed_demo(s, teams=3, cases=9, slug="d2", seed=0)
    with session_scope(settings.database_url) as s:
        a = lb.build_board(s, lb.find_track(s, "d1", "main")).to_dict()
        b = lb.build_board(s, lb.find_track(s, "d2", "main")).to_dict()
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("submission_id", "team_id", "team")} for r in rows]  # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"])
    assert a["frozen_at"] is None


def test_size_classes_from_the_manifest_labels(client, settings):
    # the committed "tiny" manifest: MR_0001 labels 1 large, 2 small, 3 medium, 4 medium;
    # US_0001 labels 1 large, 2 small, 3 medium; PET_0001 labels 1 large, 2-4 small (this case fails)
    cs = [("3DBox_MR_0001", "MR", "large"), ("2DBox_US_0001", "US", "large"), ("3DBox_PET_0001", "PET", "medium")]
    # case 2 is stored as the worker stores it: evaluator's CaseScore.to_dict(), labels under "per_class"
    pc = [{"1": {"dsc": 0.9, "nsd": 0.9}, "2": {"dsc": 0.3, "nsd": 0.4}, "3": {"dsc": 0.6, "nsd": 0.6},
           "4": {"dsc": 0.7, "nsd": 0.8}},
          {"profile": "default", "tolerance": 2.0, "dsc": 0.55, "nsd": 0.53, "notes": [], "per_class": {
              "1": {"dsc": 0.95, "nsd": 1.0, "gt_voxels": 10, "pred_voxels": 10},
              "2": {"dsc": 0.2, "nsd": 0.1, "gt_voxels": 10, "pred_voxels": 10},
              "3": {"dsc": 0.5, "nsd": 0.5, "gt_voxels": 10, "pred_voxels": 10}}},
          {}]
    with session_scope(settings.database_url) as s:
        tr = make_challenge(s, tracks={"main": {"testset": "tiny"}})["main"]
        add_submission(s, track=tr, team=make_team(s, "t"), cases=cs, dsc=arr(0.625, 0.55, 0), nsd=arr(0.675, 0.53, 0),
                       runtime=np.ones(3), failed=np.array([False, False, True]), per_class=pc)
    body = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
    assert body["size_source"] == "manifest labels" and body["size_classes"] == ["small", "medium", "large"]
    r = body["rows"][0]
    # small: MR 0.3, US 0.2, PET 0, 0, 0 (failed) → 0.5/5; medium: 0.6, 0.7, 0.5 → 0.6; large: 0.9, 0.95, 0 → 0.617
    assert r["size:small:dsc"] == pytest.approx(0.1)
    assert r["size:medium:dsc"] == pytest.approx(0.6)
    assert r["size:large:dsc"] == pytest.approx(0.617, abs=1e-3)
    assert r["size:small:nsd"] == pytest.approx(0.1)  # (0.4 + 0.1) / 5


def test_undefined_class_scores_are_left_out_of_size_classes():
    from api.leaderboard.service import CaseRecord, RunCases, _entry_stats

    # label 2 is undefined (absent from both masks: None), so "small" averages label 3 only
    c = CaseRecord("CT", "small", True, 0.5, 0.5, 1.0,
                   {"per_class": {"1": {"dsc": 0.9, "nsd": 0.8}, "2": {"dsc": None, "nsd": None}, "3": {"dsc": 0.4, "nsd": 0.3}}})
    row = _entry_stats(RunCases(60.0, {"x": c}), ["x"], {"x": "CT"}, ["CT"],
                       {"x": {"1": "large", "2": "small", "3": "small"}}, {})
    assert row.value("size:small:dsc") == pytest.approx(0.4) and row.value("size:large:nsd") == pytest.approx(0.8)
    assert row.value("size:medium:dsc") is None
