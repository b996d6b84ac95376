"""Benchmark (issue 14): the platform's overhead per iteration of an interactive case.

    .venv/bin/python bench/interactive.py [--testset tiny] [--iterations 5]

One interactive run of the test set (default: the built-in tiny set, K = 5: 6 container runs per case) through THE
execution path (tests/run_helpers.py): the real API app under uvicorn on 127.0.0.1 (SQLite), the execution host
``worker.shard.ShardExecutor`` with the real Docker sandbox, the trusted scorer inline. The model is the test image
``click-refine`` (tests/images/behaviour/scripts/click.py: loads the input, applies the clicks, writes ``segs``).

Per iteration the worker measures its wall time from the start of building the iteration's input to the end of the
round trip that returns the next clicks (input npz built, container started and waited for; it was created ahead,
during the previous iteration's round trip, and is removed in the background; output uploaded, validated and
scored against the ground truth, next clicks simulated on the trusted side, answer back) and the container's
runtime (from just before the engine's start call to the return of the blocking wait call, the same span for every
image); the platform overhead is the difference. Also printed: the
iteration round trip alone (the POST …/iterations/{i} call as the worker sees it) and, as a cross-check from the
stored audit, each case's worker wall time minus its total runtime, divided by its iterations.

Goal: median overhead per iteration <= 0.15 s. The last line is the median and its ratio to the goal.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stack import server_stack  # noqa: E402 (bench/ is the script directory, first on sys.path)

GOAL_S = 0.15


def _stack(client, settings) -> str:
    from sqlalchemy import text

    from api.db import session_scope

    def v(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    with session_scope(settings.database_url) as s:
        db = s.execute(text("select 'SQLite ' || sqlite_version()")).scalar_one()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"stack: Python {platform.python_version()}, {server_stack()}, fastapi {v('fastapi')}, "
            f"httpx {v('httpx')}, numpy {v('numpy')}, scipy {v('scipy')}, sqlalchemy {v('sqlalchemy')}, {db}, "
            f"Docker engine {client.version().get('Version')}; {os.cpu_count()} cores ({cpu}), load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, base image {settings.base_image}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testset", default="tiny")
    ap.add_argument("--iterations", type=int, default=5)
    args = ap.parse_args()

    import docker
    from sqlalchemy import select

    import worker.interactive as wi
    from api.db import migrate, session_scope
    from api.models import CaseResult, RunState, TrackKind
    from api.settings import Settings
    from tests.run_helpers import ShardedHost, create_run
    from tests.worker_helpers import build_test_image
    from worker.client import WorkerClient

    from api.settings import DEFAULT_BASE_IMAGE
    base = os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    client = docker.from_env(timeout=120)
    image = build_test_image(client, base, "click-refine")
    tmp = Path(tempfile.mkdtemp(prefix="segarena-bench-interactive-"))
    settings = Settings(data_dir=tmp / "data", base_image=base, execution="sharded")
    settings.ensure_dirs()
    migrate(settings.database_url)
    print(_stack(client, settings), flush=True)

    outcomes: list[wi.InteractiveOutcome] = []
    round_trips: list[float] = []
    real_interactive, real_upload = wi._interactive, WorkerClient.upload_iteration

    def interactive(*a, **kw):
        report, outcome = real_interactive(*a, **kw)
        outcomes.append(outcome)
        return report, outcome

    def upload_iteration(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return real_upload(self, *a, **kw)
        finally:
            round_trips.append(time.perf_counter() - t0)

    import worker.sandbox as sbx

    real_run_case = sbx.run_case
    runs: list[sbx.CaseRun] = []

    def run_case(*a, **kw):
        case_run = real_run_case(*a, **kw)
        runs.append(case_run)
        return case_run

    sbx.run_case = run_case
    wi._interactive, WorkerClient.upload_iteration = interactive, upload_iteration
    try:
        _sub, run_id = create_run(settings, testset=args.testset, image_id=image, kind=TrackKind.interactive,
                                  iterations=args.iterations, case_timeout_s=120, memory_mb=1024, fail_fast_cases=0,
                                  shard_size=0)
        with ShardedHost(settings, docker=client) as host:
            t0 = time.monotonic()
            result = host.run(run_id)
            wall = time.monotonic() - t0
    finally:
        wi._interactive, WorkerClient.upload_iteration = real_interactive, real_upload
        sbx.run_case = real_run_case
    if result.state != RunState.succeeded:
        print(f"the run did not succeed: {result.state} {result.reason}")
        return 1
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
        per_case = [((r.wall_s or 0.0) - r.runtime_s) / max(1, len(r.iterations or [])) for r in rows
                    if r.wall_s is not None]
        n_iter = sum(len(r.iterations or []) for r in rows)
        mean_dsc = [statistics.fmean(e["dsc"] for e in r.iterations) for r in rows]
    overhead = [p for o in outcomes for p in o.platform_s]
    runtimes = [p for o in outcomes for p in o.runtimes]
    q = statistics.quantiles(overhead, n=10) if len(overhead) >= 10 else [min(overhead), max(overhead)]
    print(f"run: {len(rows)} cases x {args.iterations + 1} iterations = {n_iter} container runs in {wall:.1f} s "
          f"(mean DSC over iterations {statistics.fmean(mean_dsc):.3f})")
    print(f"container runtime per iteration: median {statistics.median(runtimes):.3f} s")
    print(f"iteration round trip (POST …/iterations/i: upload, validate, score, next clicks): median "
          f"{statistics.median(round_trips):.3f} s, max {max(round_trips):.3f} s")
    print(f"audit cross-check (case wall - runtime) / iterations: median {statistics.median(per_case):.3f} s")
    parts = {name: [p for o in outcomes for p in getattr(o, name)] for name in ("prepare_s", "sandbox_s",
                                                                                  "round_trip_s")}
    print("per iteration, medians: input npz built " + f"{statistics.median(parts['prepare_s']):.3f} s, sandbox call "
          f"minus runtime (start, wait, inspect; created ahead, removed in the background) "
          f"{statistics.median(parts['sandbox_s']):.3f} s, "
          f"iteration round trip {statistics.median(parts['round_trip_s']):.3f} s")
    waits = [r.lock_wait_s for r in runs]
    ahead = sum(1 for r in runs if r.precreated)
    print(f"containers created ahead (during the previous iteration's round trip or the input download): {ahead} of "
          f"{len(runs)}; wait for the pinned cores' locks (held by other timed runs on this host, part of the "
          f"sandbox call): median {statistics.median(waits):.3f} s, max {max(waits):.3f} s")
    print(f"platform overhead per iteration (wall - container runtime): p10 {q[0]:.3f} s, p90 {q[-1]:.3f} s, "
          f"max {max(overhead):.3f} s over {len(overhead)} iterations")
    med = statistics.median(overhead)
    print(f"platform overhead per iteration, median: {med:.3f} s (goal <= {GOAL_S} s) = ratio {med / GOAL_S:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
