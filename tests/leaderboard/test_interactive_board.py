"""Interactive tracks on the leaderboard (real SQLite, the served app): DSC_AUC / NSD_AUC, final DSC / NSD and the
per-iteration means as columns (JSON, CSV, page), the ranking scheme applied to CVPR25_iter_eval.py's five
metrics, the score-vs-iteration curves as SVG with their numbers as text, the timing mode named on the board.

Analytic fixture (2 cases alike, K = 2): team A's DSC = NSD per iteration [0.5, 0.9, 0.85], 1 s per case; team B's
[0.5, 0.6, 0.9], 2 s. The reference's AUC over the K click iterations (unit steps): A (0.9 + 0.85) / 2 = 0.875,
B 0.75. A wins DSC_AUC, NSD_AUC and runtime, B the final DSC and NSD: on the five metrics A ranks first under both
schemes; on DSC, NSD and runtime alone (a main track's metrics) B would."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.db import session_scope
from api.models import CaseResult, Run, TrackKind
from leaderboard_web.seed import add_submission
from tests.leaderboard_helpers import at, cases, make_app, make_challenge, make_team

CURVES = {"A": [0.5, 0.9, 0.85], "B": [0.5, 0.6, 0.9]}
RUNTIME = {"A": 1.0, "B": 2.0}


@pytest.fixture
def client(settings):
    with TestClient(make_app(settings)) as c:
        yield c


def _world(url, scheme: str, timing: str = "docker_run") -> None:
    cs = cases(2, mods=("CT",))
    with session_scope(url) as s:
        tr = make_challenge(s, tracks={"inter": {"kind": TrackKind.interactive, "iterations": 2,
                                                 "ranking_scheme": scheme, "timing": timing}})["inter"]
        for i, (name, curve) in enumerate(CURVES.items()):
            team = make_team(s, name)
            n = len(cs)
            sub = add_submission(s, track=tr, team=team, cases=cs, dsc=np.full(n, curve[-1]),
                                 nsd=np.full(n, curve[-1]), runtime=np.full(n, RUNTIME[name]), label="v1",
                                 created_at=at(i))
            auc = (curve[1] + curve[2]) / 2
            its = [{"iteration": k, "status": "ok", "valid": True, "dsc": v, "nsd": v, "runtime_s": RUNTIME[name] / 3}
                   for k, v in enumerate(curve)]
            runs = [r for r in s.query(Run).filter(Run.submission_id == sub.id)]
            s.execute(update(CaseResult).where(CaseResult.run_id.in_([r.id for r in runs]))
                      .values(iterations=its, dsc_auc=auc, nsd_auc=auc, budget_exceeded=(name == "B")))


@pytest.mark.parametrize("scheme", ["rank_then_aggregate", "aggregate_then_rank"])
def test_auc_columns_ranking_and_curves(client, settings, scheme):
    _world(settings.database_url, scheme)
    board = client.get("/api/challenges/c1/tracks/inter/leaderboard").json()
    keys = [c["key"] for c in board["columns"]]
    for key in ("dsc_auc", "nsd_auc", "dsc", "nsd", "runtime_s", "over_budget", "dsc_it0", "dsc_it2", "nsd_it2"):
        assert key in keys, keys
    labels = {c["key"]: c["label"] for c in board["columns"]}
    assert labels["dsc"] == "Final DSC" and labels["dsc_auc"] == "DSC AUC"
    assert board["iterations"] == 2 and board["timing"] == "docker_run" and "docker run" in board["timing_label"]
    rows = {r["team"]: r for r in board["rows"]}
    assert rows["A"]["rank"] == 1 and rows["B"]["rank"] == 2  # the AUCs count: on DSC/NSD/runtime B would lead
    assert rows["A"]["dsc_auc"] == pytest.approx(0.875) and rows["B"]["nsd_auc"] == pytest.approx(0.75)
    assert rows["A"]["dsc"] == pytest.approx(0.85) and rows["B"]["dsc"] == pytest.approx(0.9)
    assert rows["A"]["curve"]["dsc"] == pytest.approx(CURVES["A"]) and rows["B"]["curve"]["nsd"] == \
        pytest.approx(CURVES["B"])
    assert [rows["B"][f"dsc_it{i}"] for i in range(3)] == pytest.approx(CURVES["B"])
    assert rows["B"]["over_budget"] == 2 and rows["A"]["over_budget"] == 0
    # the CSV: the same columns and cells
    table = list(csv.reader(io.StringIO(client.get("/api/challenges/c1/tracks/inter/leaderboard.csv").text)))
    head = table[0]
    for h in ("DSC AUC", "NSD AUC", "Final DSC", "Final NSD", "Over budget", "DSC @0", "DSC @2", "NSD @1"):
        assert h in head, head
    a = next(row for row in table[1:] if row[head.index("Team")] == "A")
    assert a[head.index("DSC AUC")] == "0.875" and a[head.index("DSC @1")] == "0.900"
    # the page: the curves as SVG, their numbers as text, the timing mode named
    page = client.get("/challenges/c1/tracks/inter").text
    assert page.count("<polyline") >= 4 and "DSC vs iteration" in page and "NSD vs iteration" in page
    assert "0.500, 0.900, 0.850" in page and "<desc>" in page and 'class="curve-numbers"' in page
    assert 'data-timing="docker_run"' in page


def test_main_track_board_names_its_timing_and_has_no_curve(client, settings):
    cs = cases(2, mods=("CT",))
    with session_scope(settings.database_url) as s:
        tr = make_challenge(s, tracks={"main": {}})["main"]
        add_submission(s, track=tr, team=make_team(s, "A"), cases=cs, dsc=np.full(2, 0.8), nsd=np.full(2, 0.8),
                       runtime=np.ones(2), label="v1", created_at=at(0))
    board = client.get("/api/challenges/c1/tracks/main/leaderboard").json()
    assert board["timing"] == "container" and board["iterations"] is None
    assert "dsc_auc" not in [c["key"] for c in board["columns"]] and "curve" not in board["rows"][0]
    page = client.get("/challenges/c1/tracks/main").text
    assert 'data-timing="container"' in page and "vs iteration" not in page


def test_prompt_modes_side_by_side(client, settings):
    """SAMRI's comparison: the same test set under box, point and box+point prompts, one row per team."""
    cs = cases(2, mods=("MR",))
    scores = {"box": {"A": 0.8, "B": 0.7}, "point": {"A": 0.6, "B": 0.65}, "boxpoint": {"A": 0.85, "B": 0.75}}
    with session_scope(settings.database_url) as s:
        tracks = make_challenge(s, tracks={
            "boxpoint": {"prompt": "box+point"}, "box": {}, "point": {"prompt": "point"},
            "other": {"testset": "small", "prompt": "point"},  # another test set: not compared
        })
        teams = {n: make_team(s, n) for n in ("A", "B")}
        for slug, by_team in scores.items():
            for i, (name, v) in enumerate(by_team.items()):
                add_submission(s, track=tracks[slug], team=teams[name], cases=cs, dsc=np.full(2, v),
                               nsd=np.full(2, v - 0.1), runtime=np.ones(2), label=slug, created_at=at(i))
    out = client.get("/api/challenges/c1/prompt-comparison").json()
    assert len(out["groups"]) == 1
    group = out["groups"][0]
    assert [(t["slug"], t["prompt"]) for t in group["tracks"]] == [("box", "box"), ("point", "point"),
                                                                   ("boxpoint", "box+point")]
    rows = {row["team"]: row["tracks"] for row in group["rows"]}
    assert rows["A"]["point"]["dsc"] == pytest.approx(0.6) and rows["B"]["point"]["rank"] == 1
    assert rows["B"]["boxpoint"]["nsd"] == pytest.approx(0.65) and rows["A"]["box"]["rank"] == 1
    assert [row["team"] for row in group["rows"]] == ["A", "B"]  # by the first track's DSC
    page = client.get("/challenges/c1").text
    assert "Prompt modes side by side" in page and "box, point, box+point" in page
    assert client.get("/api/challenges/nope/prompt-comparison").status_code == 404
