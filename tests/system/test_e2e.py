"""End to end, with real services: uvicorn (``segarena serve``), the trusted scorer (``segarena scorer``) and an
execution worker (``segarena worker``: the API URL, a worker token and the broker URL only — no database, no
storage) as subprocesses, the Docker engine, and either PostgreSQL + Redis or embedded mode (SQLite + kombu's
SQLAlchemy broker). The worker's identity comes from SEGARENA_BOOTSTRAP_WORKER_TOKEN, as ./segarena.sh up does.

The flow: an organizer creates a challenge on the ``tiny`` set (``micro`` in embedded mode) and a team; the
participant uploads the classic baseline archive with ``segarena submit`` over HTTP (resumable uploads) and follows it with
``segarena status --watch``; the execution worker runs its shards case by case, the scorer scores each upload;
the leaderboard JSON and page show its per-modality scores, and those equal a direct ``segarena score`` of the
outputs the container wrote.
A last test runs ``segarena demo`` twice in embedded mode: the first run sets everything up, the second
finds it all and does nothing.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from data_manifests.sets import check_testset
from tests.cli_helpers import ROOT, free_port, run_cli, segarena_cmd, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.docker]

RUN_TIMEOUT_S = 420  # the tiny set (27 cases) takes about 30 s; generous for a loaded CI machine


class Stack:
    """``segarena serve`` + ``segarena scorer`` (the trusted side, one environment) + ``segarena worker`` (the
    execution host: its own environment of three settings, its queue and a cache dir) as subprocesses."""

    def __init__(self, tmp: Path, extra_env: dict[str, str], *, workers: int = 1):
        self.workers = workers  # execution workers; more than one: each pinned to its own core, own cache dir
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "sa_e2e_" + secrets.token_hex(16)
        self.data_dir = tmp / "data"
        self.queue = "e2e" + secrets.token_hex(4)  # a queue of our own: no other worker takes our runs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_") or k in
                    {"SEGARENA_BASE_IMAGE", "SEGARENA_PG_PORT"}}
        self.env.update({
            "SEGARENA_DATA_DIR": str(self.data_dir), "SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN": self.token,
            "SEGARENA_WORKER_QUEUES": self.queue, "SEGARENA_QUEUES": f"cpu:cpu,gpu:gpu,{self.queue}:cpu",
            "SEGARENA_PUBLIC_BASE_URL": self.url,
            "SEGARENA_URL": self.url, "SEGARENA_CACHE_DIR": str(tmp / "cache"),
            "SEGARENA_KEEP_CASE_OUTPUTS": "1",  # the scenario re-scores the outputs with `segarena score`
            "SEGARENA_CONFIG": str(tmp / "none.toml"), **extra_env})
        from api.deps import new_token
        from api.settings import Settings

        self.env["SEGARENA_BOOTSTRAP_WORKER_TOKEN"] = new_token()
        broker = self.env.get("SEGARENA_BROKER_URL") or Settings(data_dir=self.data_dir).broker_url
        # the execution host: no database URL, no storage setting (it reaches them through the API only)
        self.worker_env = {k: v for k, v in self.env.items()
                           if k not in {"SEGARENA_DATABASE_URL", "SEGARENA_STORAGE_URL", "SEGARENA_STORAGE_DIR",
                                        "SEGARENA_DATA_DIR", "SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN",
                                        "SEGARENA_BOOTSTRAP_WORKER_TOKEN"}}
        self.worker_env.update({"SEGARENA_API_URL": self.url, "SEGARENA_BROKER_URL": broker,
                                "SEGARENA_WORKER_TOKEN": self.env["SEGARENA_BOOTSTRAP_WORKER_TOKEN"],
                                "SEGARENA_IMAGE_LOCK_DIR": str(tmp / "image-locks")})
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(segarena_cmd(*args), env=env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=ROOT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start(self) -> Stack:
        serve = self._spawn("serve", ["serve", "--port", str(self.port)], self.env)
        self._spawn("scorer", ["scorer"], self.env)
        wait_http(f"{self.url}/health", 90, proc=serve)
        if self.workers == 1:
            self._spawn("worker", ["worker"], self.worker_env)  # says hello to the API: started once it answers
            return self
        cores = os.cpu_count() or 1
        for i in range(self.workers):  # hosts of one queue: any of them takes any shard of a run
            self._spawn(f"worker{i + 1}", ["worker"], {**self.worker_env, "SEGARENA_WORKER_CPUS": str(i % cores),
                                                       "SEGARENA_CACHE_DIR": str(self.tmp / f"cache{i + 1}")})
        return self

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.iterdir()))

    def org(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)


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


def test_demo_sets_up_once_and_second_run_is_quick(docker_client, base_image, tmp_path):
    """``segarena demo`` (what ./segarena.sh up runs) on the tiny set (on micro, 9 cases, variants tie in rank) with
    the interactive track (4 containers per case) on micro fills every track: two unranked baselines and three ranked
    teams on main, two booster entries with their Δ and speed-up, a reproduction with its verdict, the click-refine
    and point-grow baselines on the interactive track; then a second run is a no-op."""
    from segarena.demo import ENTRIES

    # demo tracks use the queue "cpu"; two execution workers share its shards (one core each)
    stack = Stack(tmp_path, {"SEGARENA_DEMO_TESTSET": "tiny", "SEGARENA_DEMO_INTERACTIVE_TESTSET": "micro",
                             "SEGARENA_WORKER_QUEUES": "cpu"}, workers=2)
    try:
        stack.start()
        t0 = time.monotonic()
        first = subprocess.run(segarena_cmd("demo", "--timeout", str(3 * RUN_TIMEOUT_S)),
                               check=False, env={**stack.env, "SEGARENA_TOKEN": ""}, capture_output=True, text=True, timeout=1500,
                               cwd=ROOT)
        first_s = time.monotonic() - t0
        assert first.returncode == 0, first.stdout + first.stderr + stack.log_tail()
        assert "creating the 'demo' challenge" in first.stdout
        queued = re.findall(r"submission (\d+) queued \(([\w-]+)\)", first.stdout)
        assert [k for _i, k in queued] == ([e.key for e in ENTRIES if not e.reproduces] +
                                           [e.key for e in ENTRIES if e.reproduces]), first.stdout
        # to the API on this machine the archives go uncompressed, and each is removed once uploaded
        assert re.search(r"submitting \S+\.tar \(", first.stdout) and ".tar.gz" not in first.stdout, first.stdout
        assert not list((stack.data_dir / "demo").glob("*.tar*")), sorted((stack.data_dir / "demo").iterdir())
        assert "box-fill (submission 1): succeeded 27/27 cases" in first.stdout, first.stdout
        assert "classic (submission 2): succeeded 27/27 cases" in first.stdout, first.stdout
        api = f"{stack.url}/api/challenges/demo/tracks"
        board = httpx.get(f"{api}/main/leaderboard", timeout=30).json()
        by_team = {r["team"]: r for r in board["rows"]}
        assert set(by_team) == {"Baseline: box fill", "Baseline: classic (Otsu + LCC)", "Aurora Lab", "Birch Imaging",
                                "Cedar AI"}
        assert by_team["Baseline: box fill"]["baseline"] and by_team["Baseline: box fill"]["rank"] is None
        ranked = sorted(r["rank"] for r in board["rows"] if not r["baseline"])
        # three ranked teams, in competition ranking: the runtime is one of the ranked metrics (rank-then-aggregate
        # over DSC, NSD and runtime per case), so two teams may tie on a busy machine ([1, 1, 3] is then right)
        assert len(ranked) == 3 and all(r == 1 + sum(o < r for o in ranked) for r in ranked), board["rows"]
        assert len({r["dsc"] for r in board["rows"]}) == 5, "the variants must score differently"
        assert by_team["Baseline: classic (Otsu + LCC)"]["dsc"] > by_team["Baseline: box fill"]["dsc"]
        booster = httpx.get(f"{api}/booster/leaderboard", timeout=30).json()["rows"]
        assert {r["team"] for r in booster} == {"Aurora Lab", "Birch Imaging"}
        assert all(r["delta_dsc"] is not None and r["speedup"] for r in booster), booster
        repro = httpx.get(f"{api}/reproducibility/leaderboard", timeout=30).json()["rows"]
        assert len(repro) == 1 and repro[0]["team"] == "Cedar AI", repro
        assert repro[0]["verdict"] == "reproduced", repro  # the same method, built again: identical outputs
        assert repro[0]["reproduces_id"] == by_team["Birch Imaging"]["submission_id"]
        interactive = httpx.get(f"{api}/interactive/leaderboard", timeout=30).json()["rows"]
        by_team_i = {r["team"]: r for r in interactive}
        assert set(by_team_i) == {"Aurora Lab", "Birch Imaging"}, interactive
        for row in interactive:  # both baselines use the clicks: their mean DSC rises from the prompt to the last click
            assert row["dsc_auc"] is not None and row["dsc_it3"] > row["dsc_it0"], row
        for track in ("main", "booster", "reproducibility", "interactive"):
            page = httpx.get(f"{stack.url}/challenges/demo/tracks/{track}", timeout=30).text
            assert ("Aurora Lab" if track != "reproducibility" else "Cedar AI") in page
        print(f"first demo run (tiny set, {len(ENTRIES)} submissions): {first_s:.1f} s")

        t0 = time.monotonic()
        second = subprocess.run(segarena_cmd("demo"), check=False, env={**stack.env, "SEGARENA_TOKEN": ""}, capture_output=True,
                                text=True, timeout=120, cwd=ROOT)
        elapsed = time.monotonic() - t0
        assert second.returncode == 0, second.stdout + second.stderr
        for step in ("generating", "creating", "building", "saving", "submitting", "created demo team"):
            assert step not in second.stdout, f"the second run repeated '{step}':\n{second.stdout}"
        assert "succeeded 27/27" in second.stdout
        subs = httpx.get(f"{stack.url}/api/submissions", headers={"Authorization": f"Bearer {stack.token}"}).json()
        assert len(subs) == len(ENTRIES), "the second run must not submit again"
        print(f"second demo run: {elapsed:.1f} s")  # reported, not asserted (timings belong in bench/)
    finally:
        stack.stop()
