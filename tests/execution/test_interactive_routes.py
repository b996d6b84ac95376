"""The interactive round trip on the trusted side (POST /api/worker/shards/{id}/cases/{case}/iterations/{i},
docs/interactive.md), over HTTP through the real app on SQLite and PostgreSQL, the tests playing the execution host:
the next clicks come from the ground truth the host never sees, every iteration is scored, a failed iteration keeps
the last valid prediction, the class budget is enforced here, the case upload folds the iterations into the
CaseResult; only the lease holder may post, uploads are bounded and ordered, retries are idempotent.

Reference values: the per-iteration DSC against an independent numpy Dice on the tiny set's ground truth; the AUC
against scipy.integrate.cumulative_trapezoid as CVPR25_iter_eval.py calls it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sqlalchemy import select, update

from api.db import session_scope
from api.models import CaseIteration, CaseResult, CaseStatus, Run, Track, TrackKind
from tests.api_helpers import app, auth, client, db_settings, seed, submit  # noqa: F401 (fixtures)



def _worker(db_settings, name: str) -> str:
    from api.execution.identity import create_worker

    with session_scope(db_settings.database_url) as s:
        _, token = create_worker(s, db_settings, actor=None, name=name, queues=["cpu"])
    return token


def _hello(client, token: str, name: str) -> None:
    body = {"name": name, "queues": ["cpu"], "host": f"host-{name}", "pid": 1, "cpu_model": "Test CPU", "cores": 2,
            "docker_version": "27.0", "calibration_s": 1.0}
    assert client.post("/api/worker/hello", json=body, headers=auth(token)).status_code == 200


def _world(client, db_settings, **track):
    db_settings.execution = "sharded"
    w = seed(db_settings.database_url, quota=20, shard_size=100)
    with session_scope(db_settings.database_url) as s:
        s.execute(update(Track).where(Track.id == w.tracks["main"])
                  .values(kind=TrackKind.interactive, iterations=track.get("iterations", 3),
                          class_budget_s=track.get("class_budget_s", 90.0), prompt=track.get("prompt", "box")))
        s.commit()
    w.wt1, w.wt2 = _worker(db_settings, "w1"), _worker(db_settings, "w2")
    _hello(client, w.wt1, "w1")
    _hello(client, w.wt2, "w2")
    r = submit(client, w.token_a)
    assert r.status_code == 201, r.text
    spec = client.post("/api/worker/claim", json={"name": "w1", "queue": "cpu"}, headers=auth(w.wt1))
    assert spec.status_code == 200, spec.text
    w.spec = spec.json()
    w.sub_id = r.json()["id"]
    with session_scope(db_settings.database_url) as s:
        w.run_id = s.scalar(select(Run.id).where(Run.submission_id == w.sub_id))
    return w


def _case(db_settings, case_id: str):
    from api.execution.testsets import load_testset
    from api.storage import Storage

    _m, root, index = load_testset("tiny", Storage.from_settings(db_settings))
    case = index[case_id]
    with np.load(root / case.gt.path) as z:
        gts = np.asarray(z["gts"])
    with np.load(root / case.input.path) as z:
        boxes = np.asarray(z["boxes"])
    return case, gts, boxes


def _npz(segs: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, segs=segs)
    return buf.getvalue()


def _post(client, token, spec, case_id, i, *, status="ok", output: bytes | None = None, lease=None, **meta):
    body = {"lease": lease or spec["lease"], "status": status, "reason": "", "runtime_s": 0.5, **meta}
    files = {"meta": (None, json.dumps(body))}
    if output is not None:
        files["output"] = (f"{case_id}.npz", output, "application/octet-stream")
    return client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case_id}/iterations/{i}", files=files,
                       headers=auth(token))


def _finish_case(client, token, spec, case_id, **meta):
    body = {"lease": spec["lease"], "status": "ok", "reason": "", "runtime_s": 0.0, "wall_s": 1.0, **meta}
    return client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case_id}", files={"meta": (None, json.dumps(body))},
                       headers=auth(token))


def _dice(gt: np.ndarray, pred: np.ndarray, labels) -> float:
    """Independent multi-class Dice (mean over the labels), numpy only."""
    out = []
    for c in labels:
        g, p = gt == c, pred == c
        denom = g.sum() + p.sum()
        out.append(1.0 if denom == 0 else 2.0 * np.logical_and(g, p).sum() / denom)
    return float(np.mean(out))


def _box_fill(shape, boxes) -> np.ndarray:
    segs = np.zeros(shape, np.uint8)
    for i, row in enumerate(np.asarray(boxes).reshape(len(boxes), -1), start=1):
        b = [int(v) for v in row]
        if len(shape) == 3:
            segs[b[2]:b[5] + 1, b[1]:b[4] + 1, b[0]:b[3] + 1] = i
        else:
            segs[b[1]:b[3] + 1, b[0]:b[2] + 1] = i
    return segs


def _apply(segs: np.ndarray, nxt: dict) -> np.ndarray:
    """What a model that follows every click does: each click's voxel fixed."""
    out = segs.copy()
    for label, clicks in zip(nxt["labels"], nxt["clicks"], strict=True):
        for p in clicks["fg"]:
            out[tuple(p)] = label
        for p in clicks["bg"]:
            if out[tuple(p)] == label:
                out[tuple(p)] = 0
    return out


def test_round_trip_clicks_from_the_trusted_side_and_folded_case(client, db_settings):
    from scipy.integrate import cumulative_trapezoid

    w = _world(client, db_settings, iterations=3)
    spec = w.spec
    assert spec["interactive"] == {"iterations": 3, "class_budget_s": 90.0} and spec["prompt"] == "box"
    case_spec = spec["cases"][0]
    case_id = case_spec["id"]
    case, gts, boxes = _case(db_settings, case_id)
    labels = [lab.value for lab in case.labels]
    assert case_spec["classes"] == len(labels) and case_spec["shape"] == list(case.shape)
    segs = _box_fill(tuple(case.shape), boxes)
    expected = []
    seen_clicks = 0
    for i in range(4):
        expected.append(_dice(gts, segs, labels))
        r = _post(client, w.wt1, spec, case_id, i, output=_npz(segs))
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["valid"] and a["iteration"] == i and not a["cancel"] and a["done"] == (i == 3)
        if i < 3:
            nxt = a["next"]
            assert nxt["iteration"] == i + 1 and nxt["labels"] == labels
            # one entry per class per refinement so far; a click lies in the class's error region
            assert all(len(o) == i + 1 for o in nxt["clicks_order"])
            n = sum(len(c["fg"]) + len(c["bg"]) for c in nxt["clicks"])
            assert n > seen_clicks
            seen_clicks = n
            for label, clicks in zip(nxt["labels"], nxt["clicks"], strict=True):
                for p in clicks["fg"]:
                    assert gts[tuple(p)] == label
                for p in clicks["bg"]:
                    assert gts[tuple(p)] != label
            # a retry gets the same answer and records nothing twice
            again = _post(client, w.wt1, spec, case_id, i, output=_npz(segs))
            assert again.status_code == 200 and again.json()["duplicate"] and again.json()["next"] == nxt
            segs = _apply(segs, nxt)
    assert expected[-1] > expected[0]  # the clicks were followed: the Dice rose
    up = _finish_case(client, w.wt1, spec, case_id, interactive={"iterations_run": 4})
    assert up.status_code == 200, up.text
    with session_scope(db_settings.database_url) as s:
        row = s.scalar(select(CaseResult).where(CaseResult.run_id == w.run_id, CaseResult.case_id == case_id))
        assert row.status == CaseStatus.ok and row.scored and not row.budget_exceeded
        got = [e["dsc"] for e in row.iterations]
        assert got == pytest.approx(expected, abs=1e-12)
        assert row.dsc == pytest.approx(expected[-1]) and row.runtime_s == pytest.approx(4 * 0.5)
        # the reference: cumulative_trapezoid(dscs[-n_clicks:], np.arange(n_clicks))[-1]
        assert row.dsc_auc == pytest.approx(cumulative_trapezoid(np.array(got[-3:]), np.arange(3))[-1])
        row_auc = row.dsc_auc
        assert row.nsd_auc is not None
        assert s.scalar(select(CaseIteration.id).where(CaseIteration.run_id == w.run_id)) is None
    # after the case upload nothing more is accepted for it
    late = _post(client, w.wt1, spec, case_id, 0, output=_npz(segs))
    assert late.status_code == 409 and late.json()["code"] == "case_recorded"
    # the team sees the iterations and AUCs under full feedback (no clicks), not under summary
    res = client.get(f"/api/submissions/{w.sub_id}/results", headers=auth(w.token_a)).json()
    case = next(c for c in res["cases"] if c["case_id"] == case_id)
    assert case["dsc_auc"] is None and case["iterations"] is None
    with session_scope(db_settings.database_url) as s:
        s.execute(update(Track).where(Track.id == w.tracks["main"]).values(feedback="full"))
        s.commit()
    res = client.get(f"/api/submissions/{w.sub_id}/results", headers=auth(w.token_a)).json()
    case = next(c for c in res["cases"] if c["case_id"] == case_id)
    assert case["dsc_auc"] == pytest.approx(row_auc) and not case["budget_exceeded"]
    assert [e["dsc"] for e in case["iterations"]] == pytest.approx(expected) and "clicks" not in case["iterations"][0]


def test_failed_iteration_keeps_the_last_valid_prediction_and_budget(client, db_settings):
    w = _world(client, db_settings, iterations=4, class_budget_s=1.0)
    spec = w.spec
    case_id = spec["cases"][0]["id"]
    case, gts, boxes = _case(db_settings, case_id)
    segs = _box_fill(tuple(case.shape), boxes)
    budget = 1.0 * len(case.labels)
    a0 = _post(client, w.wt1, spec, case_id, 0, output=_npz(segs), runtime_s=0.1).json()
    # iteration 1: no output; 2: an invalid one (wrong shape); both keep iteration 0's prediction and clicks
    a1 = _post(client, w.wt1, spec, case_id, 1, status="no_output", runtime_s=0.1).json()
    bad = np.zeros(tuple(n + 1 for n in case.shape), np.uint8)
    a2 = _post(client, w.wt1, spec, case_id, 2, output=_npz(bad), runtime_s=0.1).json()
    assert a0["valid"] and not a1["valid"] and not a2["valid"]
    assert a2["status"] == "invalid_output" and "keeps the prediction of iteration 0" in a2["reason"]
    for a, b in ((a0, a1), (a1, a2)):  # the same prediction, clicked on again: the same clicks again
        for ca, cb in zip(a["next"]["clicks"], b["next"]["clicks"], strict=True):
            assert cb["fg"][: len(ca["fg"])] == ca["fg"] and cb["bg"][: len(ca["bg"])] == ca["bg"]
    # iteration 3 takes the case over its budget: a valid output, but not used; the case stops
    a3 = _post(client, w.wt1, spec, case_id, 3, output=_npz(gts), runtime_s=budget).json()
    assert a3["budget_exceeded"] and a3["done"] and not a3["valid"] and a3["next"] is None
    four = _post(client, w.wt1, spec, case_id, 4, output=_npz(gts), runtime_s=0.1)
    assert four.status_code == 409 and four.json()["code"] == "case_done"
    assert _finish_case(client, w.wt1, spec, case_id).status_code == 200
    with session_scope(db_settings.database_url) as s:
        row = s.scalar(select(CaseResult).where(CaseResult.run_id == w.run_id, CaseResult.case_id == case_id))
        dscs = [e["dsc"] for e in row.iterations]
        assert row.budget_exceeded and row.status == CaseStatus.ok and len(dscs) == 5
        assert dscs == pytest.approx([dscs[0]] * 5)  # never a perfect score: the over-budget output was not used
        assert dscs[0] < 1.0 and row.dsc == pytest.approx(dscs[0])
        assert [e["status"] for e in row.iterations] == ["ok", "no_output", "invalid_output", "timeout", "not_run"]
        assert "over the time budget" in row.reason


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_only_the_lease_holder_posts_iterations_in_order_and_bounded(client, db_settings):
    w = _world(client, db_settings, iterations=2)
    spec = w.spec
    case_id = spec["cases"][0]["id"]
    case, _gts, boxes = _case(db_settings, case_id)
    out = _npz(_box_fill(tuple(case.shape), boxes))
    # another worker identity, with or without the lease, and a participant token: refused
    r = _post(client, w.wt2, spec, case_id, 0, output=out)
    assert r.status_code == 403 and "another worker" in r.json()["message"]
    assert _post(client, w.token_a, spec, case_id, 0, output=out).status_code == 403
    r = _post(client, w.wt1, spec, case_id, 0, output=out, lease="not-the-lease-x")
    assert r.status_code == 409 and r.json()["code"] == "lease_lost"
    # a case of another shard, an iteration past K, out of order
    assert _post(client, w.wt1, spec, "2DBox_XX_9999", 0, output=out).status_code in (404, 422)
    r = _post(client, w.wt1, spec, case_id, 3, output=out)
    assert r.status_code == 422 and "iterations 0..2" in r.json()["message"]
    r = _post(client, w.wt1, spec, case_id, 1, output=out)
    assert r.status_code == 409 and r.json()["code"] == "iteration_out_of_order"
    # bounded: meta must be JSON with a lease and a known status; an oversized body is refused before parsing
    bad = client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case_id}/iterations/0",
                      files={"meta": (None, "{not json")}, headers=auth(w.wt1))
    assert bad.status_code == 422 and "meta" in bad.json()["message"]
    bad = _post(client, w.wt1, spec, case_id, 0, status="exploded", output=out)
    assert bad.status_code == 422 and "status" in bad.json()["message"]
    huge = client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case_id}/iterations/0",
                       content=b"x", headers={**auth(w.wt1), "Content-Type": "multipart/form-data; boundary=b",
                                              "Content-Length": str(db_settings.output_max_bytes * 2)})
    assert huge.status_code == 413
    # an oversized meta part: 413 naming its limit, as on the case upload (not a 422 "malformed multipart body")
    big_meta = _post(client, w.wt1, spec, case_id, 0, stdout_tail="x" * (int(db_settings.worker_meta_max_bytes) + 10))
    assert big_meta.status_code == 413 and "SEGARENA_WORKER_META_MAX_BYTES" in big_meta.json()["message"], big_meta.text
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(CaseIteration.id).where(CaseIteration.run_id == w.run_id)) is None
    # the holder's own iteration 0 is accepted; a non-interactive track refuses the route
    assert _post(client, w.wt1, spec, case_id, 0, output=out).status_code == 200
    with session_scope(db_settings.database_url) as s:
        s.execute(update(Track).where(Track.id == w.tracks["main"]).values(kind=TrackKind.main))
        s.commit()
    r = _post(client, w.wt1, spec, case_id, 1, output=out)
    assert r.status_code == 409 and r.json()["code"] == "not_interactive"


def test_requeued_shard_starts_the_case_again(client, db_settings):
    """A new lease (the shard was requeued) restarts a case at iteration 0: the old holder's iterations go."""
    from api.execution import shards
    from api.models import Shard

    w = _world(client, db_settings, iterations=2)
    spec = w.spec
    case_id = spec["cases"][0]["id"]
    case, _gts, boxes = _case(db_settings, case_id)
    out = _npz(_box_fill(tuple(case.shape), boxes))
    assert _post(client, w.wt1, spec, case_id, 0, output=out).status_code == 200
    assert _post(client, w.wt1, spec, case_id, 1, output=out).status_code == 200
    with session_scope(db_settings.database_url) as s:
        shard = s.get(Shard, spec["shard_id"])
        assert shards.requeue_shard(s, db_settings, shard, reason="test", actor="test")
        s.commit()
    spec2 = client.post("/api/worker/claim", json={"name": "w2", "queue": "cpu"}, headers=auth(w.wt2)).json()
    assert spec2["shard_id"] == spec["shard_id"] and spec2["lease"] != spec["lease"]
    assert _post(client, w.wt1, spec, case_id, 2, output=out).status_code == 409  # the old holder: lease lost
    r = _post(client, w.wt2, spec2, case_id, 1, output=out)
    assert r.status_code == 409 and r.json()["code"] == "iteration_out_of_order"
    assert _post(client, w.wt2, spec2, case_id, 0, output=out).status_code == 200
    with session_scope(db_settings.database_url) as s:
        rows = s.scalars(select(CaseIteration).where(CaseIteration.run_id == w.run_id)).all()
        assert [(r.iteration, r.lease) for r in rows] == [(0, spec2["lease"])]
