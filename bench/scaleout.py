"""Benchmark (issue 12): scale-out on this machine, ratios against a reference measured in the same run.

    .venv/bin/python bench/scaleout.py [--pairs 3] [--teams 20] [--cases-per-team 44] [--full] [--skip-capacity]

The stack is real processes (tests/scaleout_helpers.py): the API under uvicorn, ``segarena scorer`` (the
trusted ``score`` queue and the reaper beat), two execution workers (``segarena worker``) each
pinned to its own core (``taskset`` and ``SEGARENA_WORKER_CPUS``) with its own image cache and no database
URL, a private Redis broker, PostgreSQL when one answers on 127.0.0.1 (else SQLite), the Docker engine.

1. Wall time of one run of the tiny set (27 cases, shards of 3, the "correct" test image) on two workers
   divided by the same run on one worker (the reference); goal ≤ 0.65. Both workers have loaded the image
   in a warm-up run first. ``--pairs`` (3) such pairs, each ratio printed, the median the figure: one pair's ratio
   moves by ±0.06 between invocations on this machine (27 cases take 7-12 s).
2. Per-case platform overhead on the two-worker run: the worker's case wall time minus the container's
   runtime (input download, case directory, container start; the container is created while the input downloads
   and removed in the background), plus the upload (from the
   timestamps: the gap between two consecutive uploads of one shard minus the later case's wall time), plus
   the trusted scoring (the scorer's task times from its log); the median of the sum; goal ≤ 0.15 s.
3. Capacity and fairness: ``--teams`` teams submit at once, ``--cases-per-team`` cases each (clones of the
   tiny set's cases; a no-op image that writes nothing), on the two workers. Prints sustained cases per
   minute per core, the teams' completion times (min / median / max) and their spread ((max - min) / total:
   about 0 when the teams share the workers shard by shard, (teams - 1) / teams in first-come order), and the
   longest wait for a team's first shard against the last team's wait in first-come order. The default is scaled
   down (20 × 44 = 880 container runs); ``--full`` runs the challenge's size (20 × 2,200 = 44,000; many hours on 2 cores).

The last line is the wall-time ratio of part 1 (the median of its pairs). Needs the Docker engine, redis-server and the base image
(scripts/build-base-image.sh); talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stack import server_stack  # noqa: E402 (bench/ is the script directory, first on sys.path)

from api.settings import DEFAULT_BASE_IMAGE  # noqa: E402
BASE_IMAGE = os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE)
PG_PORT = int(os.environ.get("SEGARENA_PG_PORT", "5432"))


from api.params import as_utc as _aware  # noqa: E402 - the UTC fix-up of naive DB datetimes (after sys.path)


def _postgres() -> tuple[str | None, str]:
    """A throwaway PostgreSQL database (url, dropper name) or (None, '') when none answers."""
    try:
        import psycopg

        dsn = f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres"
        name = "segarena_bench_" + secrets.token_hex(5)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://segarena:segarena@127.0.0.1:{PG_PORT}/{name}", name
    except Exception:
        return None, ""


def _drop_postgres(name: str) -> None:
    if not name:
        return
    import psycopg

    from api.db import dispose_engines

    dispose_engines()
    dsn = f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _versions(client, stack) -> str:
    import importlib.metadata as md

    from sqlalchemy import text

    from api.db import session_scope

    def v(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    with session_scope(stack.settings.database_url) as s:
        db = s.execute(text("select version()" if "postgres" in stack.settings.database_url
                            else "select 'SQLite ' || sqlite_version()")).scalar_one()
    redis_v = subprocess.run(["redis-server", "--version"], check=False, capture_output=True, text=True).stdout.split()[2:3]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"stack: Python {platform.python_version()} ({platform.python_implementation()}), "
            f"{server_stack()}, fastapi {v('fastapi')}, starlette {v('starlette')}, "
            f"Docker engine {client.version().get('Version')}, "
            f"{' '.join(redis_v) and 'Redis ' + redis_v[0].removeprefix('v=')}, {db.split(' on ')[0][:60]}, "
            f"celery {v('celery')}, kombu {v('kombu')}, sqlalchemy {v('sqlalchemy')}, httpx {v('httpx')}; "
            f"{os.cpu_count()} cores ({cpu}), base image {BASE_IMAGE}")


def _image(client, tmp: Path, mode: str, delay_s: float = 0) -> dict:
    from tests.exec_helpers import thin_archive
    from tests.scaleout_helpers import build_delay_image

    image_id = build_delay_image(client, BASE_IMAGE, delay_s, mode=mode)
    path, sha, size = thin_archive(client, image_id, BASE_IMAGE, tmp / f"{mode}.tar")
    return {"image_id": image_id, "path": path, "sha256": sha, "bytes": size}


def _restart_worker(stack, name: str, cpus: str) -> None:
    """Start worker ``name`` again (after a stop) and wait until it is ready (its log starts afresh)."""
    log = stack.logs / f"{name}.log"
    if log.exists():
        log.rename(log.with_name(f"{name}.{time.monotonic_ns()}.log"))
    stack.start_worker(name, cpus)
    stack.wait_workers([name])


def _run_wall(stack, run_id: int) -> float:
    from api.db import session_scope
    from api.models import Run

    with session_scope(stack.settings.database_url) as s:
        run = s.get(Run, run_id)
        return (_aware(run.finished_at) - _aware(run.created_at)).total_seconds()


def _cpu_seconds(stack) -> dict[str, float]:
    """CPU seconds used so far, by part: each stack process with its descendants (API, scorer, workers), the
    Docker engine (dockerd, containerd), PostgreSQL, Redis, and the machine's total busy time (/proc/stat). What the
    total has beyond the parts is mostly the containers and their short-lived runc/shim processes."""
    hz = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        close = stat.rindex(")")
        f = stat[close + 2:].split()
        procs[int(d.name)] = (int(f[1]), stat[stat.index("(") + 1:close], (int(f[11]) + int(f[12])) / hz)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _c, _s) in procs.items():
        children.setdefault(ppid, []).append(pid)

    def tree(pid: int) -> float:
        todo, total = [pid], 0.0
        while todo:
            p = todo.pop()
            total += procs.get(p, (0, "", 0.0))[2]
            todo.extend(children.get(p, []))
        return total

    out = {name: tree(proc.pid) for name, proc in stack.procs.items() if proc.poll() is None}
    by_comm = {"engine": ("dockerd", "containerd"), "postgres": ("postgres",), "redis": ("redis-server",)}
    for part, comms in by_comm.items():
        out[part] = sum(sec for _pp, comm, sec in procs.values() if comm in comms)
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    out["total"] = (sum(cpu) - cpu[3] - cpu[4]) / hz
    return out


def _cpu_line(before: dict[str, float], after: dict[str, float], cases: int) -> str:
    parts = {k: after[k] - before.get(k, 0.0) for k in after if k != "total"}
    total = after["total"] - before["total"]
    rest = total - sum(parts.values())
    shown = ", ".join(f"{k} {v / cases:.3f}" for k, v in parts.items())
    return (f"CPU per case (s): {shown}, containers and the rest {rest / cases:.3f}; machine total "
            f"{total / cases:.3f}")


def _timed_run(stack, track_id: int, team: str, image: dict) -> tuple[int, float]:
    from tests.scaleout_helpers import case_rows, wait_run

    before = _cpu_seconds(stack)
    t0 = time.monotonic()
    _, run_id = stack.submit(track_id, team, image)
    state = wait_run(stack, run_id, timeout=1800, interval=0.05)  # a 0.3 s poll would add up to 0.3 s to a ~5 s wall
    wall = time.monotonic() - t0
    if state != "succeeded":
        raise SystemExit(f"run {run_id} ended {state}\n{stack.log_tail()}")
    print(f"run {run_id} ({team}): {_cpu_line(before, _cpu_seconds(stack), len(case_rows(stack.settings, run_id)))}")
    return run_id, wall


def _overheads(stack, run_id: int, score_times: list[float]) -> dict[str, float]:
    from tests.scaleout_helpers import case_rows

    rows = case_rows(stack.settings, run_id)
    worker = [r["wall_s"] - r["runtime_s"] for r in rows if r["wall_s"] is not None]
    uploads: list[float] = []
    by_shard: dict[int, list[dict]] = {}
    for r in rows:
        by_shard.setdefault(r["shard"], []).append(r)
    for shard_rows in by_shard.values():
        shard_rows.sort(key=lambda r: r["created_at"])
        for prev, cur in itertools.pairwise(shard_rows):
            gap = (_aware(cur["created_at"]) - _aware(prev["created_at"])).total_seconds()
            uploads.append(max(0.0, gap - (cur["wall_s"] or 0.0)))
    up = statistics.median(uploads) if uploads else 0.0
    sc = statistics.median(score_times) if score_times else 0.0
    total = [w + up + sc for w in worker]
    return {"worker": statistics.median(worker), "upload": up, "score": sc, "total": statistics.median(total),
            "runtime": statistics.median(r["runtime_s"] for r in rows), "cases": len(rows)}


def _timeline(stack, run_id: int) -> str:
    """Where one run's wall time went, from the database's timestamps (seconds after the run was created)."""
    from sqlalchemy import select

    from api.db import session_scope
    from api.models import CaseResult, Run, Shard

    with session_scope(stack.settings.database_url) as s:
        run = s.get(Run, run_id)
        t0 = _aware(run.created_at)
        shards = s.scalars(select(Shard).where(Shard.run_id == run_id)).all()
        ups = [_aware(c) for c in s.scalars(select(CaseResult.created_at).where(CaseResult.run_id == run_id))]

        def at(t) -> float:
            return (_aware(t) - t0).total_seconds()

        workers: dict[str, list[float]] = {}
        for sh in shards:
            if sh.claimed_at and sh.finished_at:
                w = workers.setdefault(sh.worker_name, [1e9, 0.0, 0])
                w[0], w[1], w[2] = min(w[0], at(sh.claimed_at)), max(w[1], at(sh.finished_at)), w[2] + 1
        per = "; ".join(f"{name} {v[0]:.2f}-{v[1]:.2f} s ({v[2]} shards)" for name, v in sorted(workers.items()))
        return (f"run {run_id} timeline (s after creation): split {at(min(sh.created_at for sh in shards)):.2f}, first "
                f"claim {min(at(sh.claimed_at) for sh in shards if sh.claimed_at):.2f}, first upload "
                f"{min(at(u) for u in ups):.2f}, last upload {max(at(u) for u in ups):.2f}, last shard finished "
                f"{max(at(sh.finished_at) for sh in shards if sh.finished_at):.2f}, run finished {at(run.finished_at):.2f}; "
                f"workers: {per}")


def _score_times(log: Path, since: int) -> tuple[list[float], int]:
    text = log.read_text(errors="replace")
    found = [float(m) for m in re.findall(r"segarena\.score_case\[[^\]]+\] succeeded in ([0-9.]+)s", text[since:])]
    return found, len(text)


def _clone_manifest(stack, n: int) -> str:
    """A manifest of ``n`` cases cloned from the tiny set's (same files, new ids), next to it; its path."""
    from api.execution.testsets import load_testset
    from api.storage import Storage

    _m, root, _ = load_testset("tiny", Storage.from_settings(stack.settings))
    raw = json.loads((Path(root) / "manifest.json").read_text())
    base = raw["cases"]
    raw["cases"] = [{**base[i % len(base)], "id": f"{base[i % len(base)]['id']}_c{i:05d}"} for i in range(n)]
    raw["id"] = f"capacity-{n}"
    path = Path(root) / f"capacity-{n}.json"
    path.write_text(json.dumps(raw))
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--cases-per-team", type=int, default=44)
    ap.add_argument("--shard-size", type=int, default=0, help="capacity part's shard size (default 4; 50 with --full)")
    ap.add_argument("--full", action="store_true", help="the challenge's size: 20 teams x 2,200 cases")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--pairs", type=int, default=3, help="part 1: pairs of runs (two workers, then one); the median ratio")
    args = ap.parse_args()
    if args.full:
        args.teams, args.cases_per_team = 20, 2200
    shard_size = args.shard_size or (50 if args.cases_per_team >= 500 else 4)

    import docker
    from sqlalchemy import select, update

    from api.db import session_scope
    from api.models import Run, Shard, Track
    from tests.api_helpers import seed
    from tests.scaleout_helpers import ScaleStack, case_rows, stack_containers, wait_run

    client = docker.from_env(timeout=300)
    pg_url, pg_name = _postgres()
    with tempfile.TemporaryDirectory(prefix="segarena-bench-scaleout-") as tmp_name:
        tmp = Path(tmp_name)
        stack = ScaleStack(tmp, database_url=pg_url)
        images = []
        try:
            world = seed(stack.settings.database_url, quota=10_000, shard_size=3)
            stack.create_worker_token()
            stack.start_trusted()
            stack.start_worker("w1", "0")
            stack.start_worker("w2", "1")
            correct = _image(client, tmp, "correct")
            noop = _image(client, tmp, "noop")
            images = [correct, noop]
            stack.wait_workers(["w1", "w2"])
            print(_versions(client, stack))
            main_track = world.tracks["main"]

            # 1. one run of the tiny set: two workers vs one (both warm), --pairs times; the median ratio
            _timed_run(stack, main_track, "Warm-up", correct)
            ratios: list[float] = []
            for pair in range(args.pairs):
                if pair:
                    _restart_worker(stack, "w2", "1")
                if not pair:  # part 2 reads the first two-worker run's scoring times
                    _, since = _score_times(stack.logs / "scorer.log", 0)
                two_run, two_wall = _timed_run(stack, main_track, f"Team A{pair}", correct)
                if not pair:
                    score_times, _ = _score_times(stack.logs / "scorer.log", since)
                    overhead_run = two_run
                per_worker: dict[str, int] = {}
                for r in case_rows(stack.settings, two_run):
                    per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + 1
                stack.kill("w2", 15)  # a clean stop: one worker left
                one_run, one_wall = _timed_run(stack, main_track, f"Team B{pair}", correct)
                ratios.append(two_wall / one_wall)
                print(_timeline(stack, two_run))
                print(_timeline(stack, one_run))
                print(f"pair {pair + 1}: tiny set (27 cases, shards of 3): one worker {one_wall:.1f} s "
                      f"(run {_run_wall(stack, one_run):.1f} s), two workers {two_wall:.1f} s "
                      f"(run {_run_wall(stack, two_run):.1f} s; cases {per_worker}); ratio {ratios[-1]:.2f}")
            ratio = statistics.median(ratios)
            print(f"tiny set, {args.pairs} pairs of runs: ratios {', '.join(f'{r:.2f}' for r in ratios)}; "
                  f"median {ratio:.2f} (goal <= 0.65)")

            # 2. per-case platform overhead (the first two-worker run)
            o = _overheads(stack, overhead_run, score_times)
            print(f"per-case platform overhead, median over {o['cases']} cases: {o['total']:.3f} s (goal <= 0.15) = "
                  f"worker {o['worker']:.3f} s (download, case dir, container start/stop: wall_s - runtime_s) + "
                  f"upload {o['upload']:.3f} s + scoring {o['score']:.3f} s; container runtime median "
                  f"{o['runtime']:.3f} s")

            # 3. capacity and fairness: N teams at once, a no-op image
            if not args.skip_capacity:
                _restart_worker(stack, "w2", "1")
                testset = _clone_manifest(stack, args.cases_per_team)
                with session_scope(stack.settings.database_url) as s:
                    s.execute(update(Track).where(Track.id == main_track)
                              .values(testset=testset, shard_size=shard_size, fail_fast_cases=0))
                t0 = datetime.now(UTC)
                m0 = time.monotonic()
                runs = [stack.submit(main_track, f"Team {i:02d}", noop)[1] for i in range(args.teams)]
                for run_id in runs:
                    wait_run(stack, run_id, timeout=48 * 3600)
                total_s = time.monotonic() - m0
                done, first = [], []
                with session_scope(stack.settings.database_url) as s:
                    for run_id in runs:
                        run = s.get(Run, run_id)
                        done.append((_aware(run.finished_at) - t0).total_seconds())
                        claimed = s.scalar(select(Shard.claimed_at).where(Shard.run_id == run_id)
                                           .order_by(Shard.claimed_at).limit(1))
                        first.append((_aware(claimed) - t0).total_seconds())
                cases = args.teams * args.cases_per_team
                rows = sum(len(case_rows(stack.settings, r)) for r in runs)
                share = total_s / args.teams
                print(f"capacity: {args.teams} teams x {args.cases_per_team} cases = {cases} container runs "
                      f"({rows} recorded) on 2 workers, shards of {shard_size}, no-op image: {total_s:.0f} s, "
                      f"{cases / (total_s / 60) / 2:.1f} cases/min/core")
                fifo_wait = total_s * (args.teams - 1) / args.teams  # the last team's wait under first-come order
                print(f"fairness: completion min {min(done):.0f} s / median {statistics.median(done):.0f} s / max "
                      f"{max(done):.0f} s: spread (max - min) / total {(max(done) - min(done)) / total_s:.2f} "
                      f"(first-come order: {(args.teams - 1) / args.teams:.2f}); max completion / (total / teams) "
                      f"{max(done) / share:.1f}; the longest wait for a first shard {max(first):.1f} s = "
                      f"{max(first) / fifo_wait:.2f} of the last team's wait under first-come order ({fifo_wait:.0f} s), "
                      f"{max(first) / share:.2f} of one team's share (total / teams {share:.1f} s)")
            print(f"wall-time ratio two workers / one worker (tiny set, median of {args.pairs} pairs): {ratio:.2f}")
        finally:
            stack.stop()
            for c in stack_containers(client, stack):
                try:
                    client.api.remove_container(c["Id"], force=True)
                except Exception:
                    pass
            for img in images:
                try:
                    client.images.remove(img["image_id"], force=True)
                except Exception:
                    pass
            _drop_postgres(pg_name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
