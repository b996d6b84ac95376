"""Benchmark (issue 9): hostile images and faults, measured, with nothing lost.

    .venv/bin/python bench/resilience.py [--skip-hostile] [--skip-faults] [--submissions 3]
                                         [--restart-docker]

Part 1 runs the hostile behaviours of tests/behaviours.py (``resilience=True``; the one test image of
tests/images/behaviour built once per behaviour) through the execution path (the real API app,
an execution host with the real sandbox, the trusted scorer; 256 MiB, 64 pids, 32 MiB /tmp, 5 s per case, a
2-case test set), each followed by another team's well-behaved run, and prints: kind, expected reason,
observed reason, lost, duplicated (and the recorded reason).
Part 2 runs a fresh queue of submissions through real processes (the API under uvicorn, ``segarena scorer``,
an execution worker ``python -m worker.exec_tasks``, a private Redis, a private PostgreSQL cluster, the
Docker engine) once undisturbed and once per fault injected
mid-case (worker SIGKILL, Redis restart with every queued message lost, PostgreSQL crash-restart,
storage read-only for 4 s; Docker engine restart only with --restart-docker, which runs every scenario on a
private engine of the rig's own and restarts that one), and prints lost, duplicated, final states and the time
relative to the undisturbed run measured in the same process. The last line is the headline: the worst time ratio under a fault.
Needs root, the Docker engine, redis-server and PostgreSQL's binaries; talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _stack import print_stack  # bench/ is the script directory, first on sys.path

from api.settings import DEFAULT_BASE_IMAGE
BASE_IMAGE = os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--submissions", type=int, default=3, help="submissions in each fault scenario's queue")
    parser.add_argument("--restart-docker", action="store_true",
                        help="also restart the Docker engine (a private one, started for the run)")
    args = parser.parse_args()
    print_stack("docker", "celery", "redis", "sqlalchemy")  # the stack this figure comes from (bench/_stack.py)

    import docker

    from api.db import dispose_engines
    from tests.behaviours import RESILIENCE_KINDS
    from tests.resilience_helpers import FaultRig, format_faults, format_table, hostile_row, run_hostile_suite

    client = docker.from_env(timeout=300)
    with tempfile.TemporaryDirectory(prefix="segarena-bench-resilience-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_hostile:
            results = run_hostile_suite(client, BASE_IMAGE, tmp / "hostile")
            rows = [hostile_row(kind, results[kind]) for kind in RESILIENCE_KINDS]
            print(format_table(rows, title="hostile images (through the real worker)"))
            wrong = [r.kind for r in rows if r.observed not in r.expected.split("|")
                     and not set(r.observed.split(",")) <= set(r.expected.split("|"))]
            print(f"kinds: {len(rows)}, contained as expected: {len(rows) - len(wrong)}"
                  + (f", unexpected: {', '.join(wrong)}" if wrong else "")
                  + f", lost: {sum(r.lost for r in rows)}, duplicated: {sum(r.duplicated for r in rows)}, "
                  f"host listener reached: {results['__listener__'].case_rows} times")
            dispose_engines()
            print()
        worst = None
        if not args.skip_faults:
            # --restart-docker: every scenario on an engine of the rig's own, which the docker_restart fault restarts
            rig = FaultRig(client, BASE_IMAGE, tmp / "faults", submissions=args.submissions,
                           private_docker=args.restart_docker)
            figures = []
            try:
                faults = ["none", "worker_sigkill", "redis_restart", "postgres_restart", "storage_unwritable"]
                if args.restart_docker:
                    faults.append("docker_restart")
                for fault in faults:
                    figures.append(rig.scenario(fault))
            finally:
                rig.close()
            print(format_faults(figures))
            base = figures[0].elapsed_s
            ratios = {f.fault: f.elapsed_s / base for f in figures[1:]}
            worst = max(ratios.items(), key=lambda kv: kv[1])
            print(f"lost: {sum(f.lost for f in figures)}, duplicated: {sum(f.duplicated for f in figures)}, "
                  f"final: {sum(f.final for f in figures)}/{sum(f.submissions for f in figures)}")
        if worst is not None:
            print(f"worst extra time under a fault: {worst[1]:.2f}x the undisturbed run ({worst[0]})")
        else:
            print("faults skipped: no time ratio")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
