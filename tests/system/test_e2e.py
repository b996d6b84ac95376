"""End to end, with real services: uvicorn (``segarena serve``), the trusted scorer (``segarena scorer``) and an
execution worker (``segarena worker``: the API URL, a worker token and the broker URL only — no database, no
storage) as subprocesses, the Docker engine, and either PostgreSQL + Redis or embedded mode (SQLite + kombu's
SQLAlchemy broker). The worker's identity comes from SEGARENA_BOOTSTRAP_WORKER_TOKEN, as ./segarena.sh up does.

The flow: an organizer creates a challenge on the ``tiny`` set (``micro`` in embedded mode) and a team; the
participant uploads the classic baseline archive with ``segarena submit`` over HTTP (resumable uploads) and follows it with
``segarena status --watch``; the execution worker runs its shards case by case, the scorer scores each upload;
the leaderboard JSON and page show its per-modality scores, and those equal a direct ``segarena score`` of the
outputs the container wrote.
(``segarena demo``, on the same stack: tests/system/test_demo.py.)
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from data_manifests.sets import check_testset
from tests.cli_helpers import run_cli
from tests.system_helpers import RUN_TIMEOUT_S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.docker]

@pytest.fixture(scope="module")
def classic_archive(docker_client, base_image, tmp_path_factory):
    """The classic baseline as a plain ``docker save`` tar (plain tar is accepted; faster than gzip here)."""
    from segarena.demo import build_baseline

    tag = build_baseline(docker_client, "classic", base_image, say=lambda _m: None)
    dest = tmp_path_factory.mktemp("archive") / "classic.tar"
    with open(dest, "wb") as fh:
        for chunk in docker_client.images.get(tag).save(named=True):
            fh.write(chunk)
    return dest


def _flow(stack: Stack, archive: Path, tmp: Path, testset: str = "tiny") -> None:
    n_cases = len(check_testset(testset).cases)
    with stack.org() as org:
        r = org.post("/api/challenges", json={"slug": "e2e", "title": "End to end", "demo": True, "tracks": [
            {"slug": "main", "title": "Main", "testset": testset, "queue": stack.queue, "memory_mb": 2048,
             "case_timeout_s": 120, "total_timeout_s": 3600, "quota_per_day": 10,
             "feedback": "full"}]})  # a validation phase: the participant's per-case views are checked below
        assert r.status_code == 201, r.text
        team = org.post("/api/teams", json={"name": "Team Otsu", "affiliation": "e2e"}).json()
        member = org.post(f"/api/teams/{team['id']}/members", json={"name": "p", "email": "p@example.org",
                                                                    "role": "participant"})
        assert member.status_code == 201, member.text
        participant = member.json()["token"]

    env = {**stack.env, "SEGARENA_TOKEN": participant, "SEGARENA_CHALLENGE": "e2e"}
    sub = run_cli("submit", str(archive), "--track", "main", "--label", "classic", "--chunk-mb", "64", env=env,
                  timeout=600)
    assert sub.returncode == 0, sub.stdout + sub.stderr + stack.log_tail()
    sid = int(sub.stdout.split("submission ", 1)[1].split(":", 1)[0])

    watch = run_cli("status", str(sid), "--watch", "--interval", "1", env=env, timeout=RUN_TIMEOUT_S)
    assert watch.returncode == 0, watch.stdout + watch.stderr + stack.log_tail()
    out = " ".join(watch.stdout.split())
    assert f"submission {sid}: succeeded ({n_cases}/{n_cases} cases)" in out, out
    assert "2DBox_US_0001 ok DSC" in out, "per-case progress lines while it runs"

    # the queue status: our declared queue, served by the worker that ran it
    queues = {q["name"]: q for q in httpx.get(f"{stack.url}/api/status", timeout=30).json()["queues"]}
    assert queues[stack.queue]["workers_online"] == 1 and queues[stack.queue]["median_wait_s"] is not None, queues

    # the participant's views
    results = run_cli("results", str(sid), "--json", env=env, check=True).stdout
    assert '"state": "succeeded"' in results
    assert "runtime" in run_cli("results", str(sid), env=env, check=True).stdout
    logs = run_cli("logs", str(sid), env=env)
    assert logs.returncode == 0, logs.stderr

    # the leaderboard, JSON and page
    board = httpx.get(f"{stack.url}/api/challenges/e2e/tracks/main/leaderboard", timeout=30).json()
    row = next(r for r in board["rows"] if r["team"] == "Team Otsu")
    assert row["cases_ok"] == n_cases and row["rank"] == 1
    page = httpx.get(f"{stack.url}/challenges/e2e/tracks/main", timeout=30).text
    assert "Team Otsu" in page
    table = run_cli("leaderboard", "main", env={**env, "SEGARENA_TOKEN": ""}, check=True).stdout
    assert "Team Otsu" in table and "X-Ray DSC/NSD" in " ".join(table.split())

    # a direct scoring of the outputs the container wrote, with the evaluator's own command
    with stack.org() as org:
        audit = org.get(f"/api/admin/submissions/{sid}").json()
    run_id = audit["runs"][-1]["id"]
    pred = tmp / "pred"
    pred.mkdir()
    for f in (stack.data_dir / "storage" / "runs" / str(run_id)).glob("*/output-*.npz"):  # runs/<run>/<case>/
        shutil.copy(f, pred / f"{f.parent.name}.npz")
    assert len(list(pred.iterdir())) == n_cases
    gt_dirs = list((stack.data_dir / "storage" / "testsets" / testset).rglob("gts"))
    assert len(gt_dirs) == 1
    scores_csv = tmp / "scores.csv"
    run_cli("score", "--pred", str(pred), "--gt", str(gt_dirs[0]), "--out", str(scores_csv), env=env, check=True)
    per_mod: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_case = {}
    with open(scores_csv) as fh:
        for rec in csv.DictReader(fh):
            if rec["level"] == "case":
                per_mod[rec["modality"]]["dsc"].append(float(rec["dsc"]))
                per_mod[rec["modality"]]["nsd"].append(float(rec["nsd"]))
                per_case[rec["case"].removesuffix(".npz")] = (float(rec["dsc"]), float(rec["nsd"]))
    assert sorted(board["modalities"]) == sorted(per_mod)
    for m, vals in per_mod.items():
        for metric in ("dsc", "nsd"):
            direct = sum(vals[metric]) / len(vals[metric])
            assert row[f"{m}:{metric}"] == pytest.approx(direct, abs=5e-4 + 1e-9), (m, metric)
            assert f'data-mod="{m}">{direct:.3f}<' in page, (m, metric, direct)
    api_cases = {c["case_id"]: (c["dsc"], c["nsd"]) for c in httpx.get(
        f"{stack.url}/api/submissions/{sid}/results", headers={"Authorization": f"Bearer {participant}"}).json()["cases"]}
    assert api_cases.keys() == per_case.keys()
    for cid, (d, n) in per_case.items():
        assert api_cases[cid] == pytest.approx((d, n), abs=1e-9), cid


def test_e2e_postgres_redis(classic_archive, postgres_url, redis_url, tmp_path):
    stack = Stack(tmp_path, {"SEGARENA_DATABASE_URL": postgres_url, "SEGARENA_BROKER_URL": redis_url})
    try:
        _flow(stack.start(), classic_archive, tmp_path)
    finally:
        stack.stop()


def test_e2e_embedded(classic_archive, tmp_path):
    stack = Stack(tmp_path, {})
    try:  # the micro set (one case per modality; the PostgreSQL flow runs tiny's three per modality)
        _flow(stack.start(), classic_archive, tmp_path, testset="micro")
    finally:
        stack.stop()
