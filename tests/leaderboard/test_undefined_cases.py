"""Undefined cases under the ``cvpr24`` profile, end to end (issue 14, "The 2024 profile, closer still").

The 2024 reference scored labels ``1..gt.max()``; a label in that range absent from both the ground truth and the
prediction made the case DSC NaN (an empty field in its CSV), and its tables' pandas ``mean`` skipped it. SegArena
stores such a case's DSC as NULL (not 0), leaves it out of the team's means and of the per-case ranks (not a
failure), and shows it as "undefined" (API ``null`` + ``undefined: true``, pages, an empty CSV field).

Through the real path: worker upload → trusted scorer (api/execution/scoring.py) → stored totals → board.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from api.db import session_scope
from api.models import CaseResult, CaseStatus, Feedback, Submission, SubmissionState, Track
from tests.api_helpers import auth

X, Y = "2DBox_US_0001", "2DBox_US_0002"  # X: label 2 removed from its ground truth (labels {1, 3}, max 3)


def _testset(db_settings, dest: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A two-case cvpr24 test set copied from ``tiny``; case X's ground truth lacks label 2 (1..max(gt) has a gap,
    as real data can). Returns (manifest path, {case id: ground truth})."""
    from api.execution.testsets import load_testset
    from api.storage import Storage
    from data_manifests.manifest import file_ref, write_manifest

    manifest, root, index = load_testset("tiny", Storage.from_settings(db_settings))
    gts = {}
    cases = []
    for cid in (X, Y):
        case = index[cid]
        for ref in (case.input, case.gt):
            (dest / ref.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / ref.path, dest / ref.path)
        with np.load(dest / case.gt.path) as z:
            g = np.asarray(z["gts"]).copy()
        if cid == X:
            assert int(g.max()) == 3 and (g == 2).any()
            g[g == 2] = 0
            np.savez_compressed(dest / case.gt.path, gts=g, spacing=np.asarray(case.spacing, dtype=np.float64))
            labels = [lab.model_copy(update={"voxels": 0}) if lab.value == 2 else lab for lab in case.labels]
            case = case.model_copy(update={"gt": file_ref(dest, case.gt.path), "labels": labels})
        gts[cid] = g
        cases.append(case)
    out = manifest.model_copy(update={"id": "undef", "metric_profile": "cvpr24", "cases": cases, "generator": None})
    return write_manifest(out, dest / "manifest.json"), gts


def _run(client, db_settings, wt: str, token: str, outputs: dict[str, np.ndarray]) -> int:
    """Submit, claim the run's one shard, upload ``outputs`` as the worker does, finish, score every case."""
    from api.execution.scoring import score_case
    from tests.api_helpers import submit

    r = submit(client, token)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    spec = client.post("/api/worker/claim", json={"name": "w1", "queue": "cpu"}, headers=auth(wt)).json()
    assert sorted(c["id"] for c in spec["cases"]) == sorted(outputs)
    for case in spec["cases"]:
        buf = io.BytesIO()
        np.savez_compressed(buf, segs=outputs[case["id"]])
        meta = {"lease": spec["lease"], "status": "ok", "reason": "", "runtime_s": 0.5, "exit_code": 0}
        up = client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case['id']}", headers=auth(wt),
                         files={"meta": (None, json.dumps(meta)),
                                "output": (f"{case['id']}.npz", buf.getvalue(), "application/octet-stream")})
        assert up.status_code == 200, up.text
    done = client.post(f"/api/worker/shards/{spec['shard_id']}/finish", json={"lease": spec["lease"], "outcome": "done"},
                       headers=auth(wt))
    assert done.status_code == 200, done.text
    with session_scope(db_settings.database_url) as s:
        ids = list(s.scalars(select(CaseResult.id).where(CaseResult.scored.is_(False))))
    for cid in ids:
        score_case(db_settings, cid)
    return sid


def test_undefined_case_is_null_left_out_of_means_and_ranks_and_shown_undefined(client, db_settings, tmp_path):
    from api.execution.identity import create_worker
    from tests.api_helpers import seed

    manifest_path, gts = _testset(db_settings, tmp_path / "undef")
    db_settings.execution, db_settings.shard_balance = "sharded", False
    w = seed(db_settings.database_url, quota=20, shard_size=27, metric_profile="cvpr24")
    with session_scope(db_settings.database_url) as s:
        track = s.get(Track, w.tracks["main"])
        track.testset, track.feedback = str(manifest_path), Feedback.full  # per-case scores shown to the team
        _, wt = create_worker(s, db_settings, actor=None, name="w1", queues=["cpu"])
    hello = {"name": "w1", "queues": ["cpu"], "host": "h", "pid": 1, "cpu_model": "CPU", "cores": 2,
             "docker_version": "27.0", "calibration_s": 1.0}
    assert client.post("/api/worker/hello", json=hello, headers=auth(wt)).status_code == 200

    # team A: both cases exact. X is undefined (label 2 absent from both masks), Y scores 1.
    a = _run(client, db_settings, wt, w.token_a, {X: gts[X], Y: gts[Y]})
    # team B: X writes label 2 on one background pixel (defined: class 2 scores 0, DSC 2/3); Y misses label 1.
    bx = gts[X].copy()
    bx[tuple(np.argwhere(bx == 0)[0])] = 2
    by = gts[Y].copy()
    by[by == 1] = 0
    b = _run(client, db_settings, wt, w.token_b, {X: bx, Y: by})

    with session_scope(db_settings.database_url) as s:
        rows = {(c.run.submission_id, c.case_id): c for c in s.scalars(select(CaseResult))}
        ux = rows[(a, X)]
        assert ux.status == CaseStatus.ok and ux.dsc is None, "an undefined case is stored NULL, not 0"
        assert ux.nsd == 0.0  # the reference computed NSD only when DSC > 0.2, which NaN is not
        assert "undefined under cvpr24" in ux.reason and ux.per_class["undefined"] is True
        assert rows[(a, Y)].dsc == 1.0
        assert rows[(b, X)].dsc == pytest.approx(2 / 3, abs=1e-4) and rows[(b, Y)].dsc == pytest.approx(2 / 3, abs=1e-4)
        sa, sb = s.get(Submission, a), s.get(Submission, b)
        assert sa.state == SubmissionState.succeeded and sb.state == SubmissionState.succeeded
        # stored totals: A's mean DSC is over its one defined case (pandas' mean), not (0 + 1) / 2
        assert sa.dsc == pytest.approx(1.0) and sb.dsc == pytest.approx(2 / 3, abs=1e-4)
        nsd_bx, nsd_by = rows[(b, X)].nsd, rows[(b, Y)].nsd
        assert nsd_bx > 0 and nsd_by < 1.0
        run_a = sa.runs[0].id

    board = client.get("/api/challenges/cvpr24/tracks/main/leaderboard").json()
    by_sub = {r["submission_id"]: r for r in board["rows"]}
    assert by_sub[a]["dsc"] == pytest.approx(1.0), "the board's mean leaves the undefined case out"
    assert by_sub[b]["dsc"] == pytest.approx(2 / 3, abs=1e-3)
    # rank-then-aggregate: A has no DSC rank in X (left out, not the worst rank); its 5 defined ranks are
    # X: NSD 2 (0 < B's), runtime 1 (tie); Y: DSC 1, NSD 1, runtime 1 → 6/5. As a failure (or 0) it would be 8/6.
    assert by_sub[a]["score"] == pytest.approx(6 / 5, abs=1e-3) and by_sub[a]["rank"] == 1
    # B: X DSC 1 (alone), NSD 1, runtime 1; Y DSC 2, NSD 2, runtime 1 → 8/6
    assert by_sub[b]["score"] == pytest.approx(8 / 6, abs=1e-3) and by_sub[b]["rank"] == 2

    # per-case API: null + the undefined flag; the owner's page and the organizers' run page say "undefined"
    res = client.get(f"/api/submissions/{a}/results", headers=auth(w.token_a))
    assert res.status_code == 200, res.text
    cases = {c["case_id"]: c for c in res.json()["cases"]}
    assert cases[X]["dsc"] is None and cases[X]["undefined"] is True and cases[X]["status"] == "ok"
    assert cases[Y]["dsc"] == 1.0 and cases[Y]["undefined"] is False
    assert res.json()["dsc"] == pytest.approx(1.0)
    mine = client.get(f"/me/submissions/{a}.json", headers=auth(w.token_a))
    assert mine.status_code == 200, mine.text
    assert {c["case_id"]: c for c in mine.json()["cases"]}[X]["undefined"] is True
    page = client.get(f"/me/submissions/{a}", headers=auth(w.token_a))
    assert page.status_code == 200 and ">undefined<" in page.text, page.text[:300]
    run_page = client.get(f"/admin/runs/{run_a}", headers=auth(w.token_org)).text
    assert ">undefined<" in run_page
    # the organizers' CSV export: an empty field, as the reference's CSV
    export = client.get("/api/admin/export.csv", headers=auth(w.token_org))
    assert export.status_code == 200, export.text
    recs = [r for r in csv.DictReader(io.StringIO(export.text))
            if r.get("case_id") == X and r.get("submission_id") == str(a)]
    assert recs and all(r["dsc"] == "" for r in recs), recs[:1]
