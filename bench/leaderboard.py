"""Benchmark: the public leaderboard GET under load (wrk, 64 connections) against uvicorn on 127.0.0.1.

    .venv/bin/python bench/leaderboard.py [--teams 50] [--cases 100] [--duration 10] [--workers 2]

Seeds a realistic board (teams × cases, with booster and reproducibility tracks) into a fresh SQLite
database, starts ``uvicorn`` (httptools + uvloop, no access log), warms the cache, then runs ``wrk``
on the HTML page and the JSON API. Reference in the same run: the time to build the board without
the cache (what every request would cost without it). Target: ≥ 1,500 req/s, p99 ≤ 50 ms.
The last line is the page's throughput.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stack import print_stack  # noqa: E402 (bench/ is the script directory, first on sys.path)

TARGET_RPS = 1500.0
TARGET_P99_MS = 50.0


def make_app():
    """uvicorn factory for the workers: the served app (API and pages) on the benchmark's database, without migrating."""
    from api.settings import Settings
    from server.app import create_app

    return create_app(Settings(), migrate=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_wrk(url: str, *, connections: int, duration: int, threads: int, gzip: bool = True) -> tuple[float, float]:
    # browsers always send Accept-Encoding: gzip; the server keeps a pre-compressed copy of each board
    headers = ["-H", "Accept-Encoding: gzip, deflate, br"] if gzip else []
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", *headers, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return rps, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teams", type=int, default=50)
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--wrk-threads", type=int, default=2)
    args = ap.parse_args()
    print_stack("fastapi", "starlette", "sqlalchemy", "jinja2")  # the stack this figure comes from (bench/_stack.py)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="segarena-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_")}
    env["SEGARENA_DATA_DIR"] = str(tmp)
    os.environ.update({"SEGARENA_DATA_DIR": str(tmp)})
    from api.db import migrate, session_scope
    from api.settings import Settings

    settings = Settings(data_dir=tmp)
    migrate(settings.database_url)
    from api import leaderboard as lb
    from leaderboard_web.seed import seed_demo

    t = time.perf_counter()
    with session_scope(settings.database_url) as s:
        seed_demo(s, teams=args.teams, cases=args.cases)
    print(f"seeded {args.teams} teams × {args.cases} cases in {time.perf_counter() - t:.1f} s")

    # reference: building the board without the cache
    with session_scope(settings.database_url) as s:
        track = lb.find_track(s, "demo", "main")
        lb.build_board(s, track)
        n, t = 5, time.perf_counter()
        for _ in range(n):
            lb.build_board(s, track)
        build_ms = (time.perf_counter() - t) / n * 1000
    print(f"reference: building the main board uncached takes {build_ms:.1f} ms "
          f"(≈ {1000 / build_ms * args.workers:.0f} req/s at best on {args.workers} workers without a cache)")

    from api.db import dispose_engines

    dispose_engines()  # close this process's connections (and let SQLite checkpoint its WAL)
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "leaderboard:make_app", "--app-dir", str(ROOT / "bench"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers), "--no-access-log",
           "--log-level", "warning"]
    try:
        import httptools  # noqa: F401
        cmd += ["--http", "httptools"]
    except ImportError:
        pass
    try:
        import uvloop  # noqa: F401
        cmd += ["--loop", "uvloop"]
    except ImportError:
        pass
    if os.environ.get("BENCH_DEBUG"):
        print(" ".join(cmd))
    server = subprocess.Popen(cmd, env=env, cwd=str(ROOT), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        page = f"{base}/challenges/demo/tracks/main"
        api = f"{base}/api/challenges/demo/tracks/main/leaderboard"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(page, timeout=10) as r:
                    size = len(r.read())
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("uvicorn did not come up") from None
                time.sleep(0.3)
        for _ in range(4 * args.workers):  # warm every worker's cache
            urllib.request.urlopen(page, timeout=10).read()
            urllib.request.urlopen(api, timeout=10).read()
        load = os.getloadavg()[0]
        print(f"page: {size / 1024:.0f} KiB; uvicorn workers: {args.workers}; wrk: {args.connections} connections, "
              f"{args.duration} s; load average before the run {load:.1f} on {os.cpu_count()} CPUs"
              + (" (busy machine: numbers are pessimistic)" if load > 1.0 else ""))
        api_rps, api_p99 = run_wrk(api, connections=args.connections, duration=args.duration, threads=args.wrk_threads)
        print(f"JSON API  : {api_rps:8.0f} req/s  p99 {api_p99:6.1f} ms")
        rps, p99 = run_wrk(page, connections=args.connections, duration=args.duration, threads=args.wrk_threads)
        print(f"HTML page : {rps:8.0f} req/s  p99 {p99:6.1f} ms")
        print(f"cached vs uncached build: {rps / (1000 / build_ms * args.workers):.1f}×")
        ok = rps >= TARGET_RPS and p99 <= TARGET_P99_MS
        print(f"target ≥ {TARGET_RPS:.0f} req/s and p99 ≤ {TARGET_P99_MS:.0f} ms: {'met' if ok else 'NOT met'} "
              f"({rps / TARGET_RPS:.2f}× the throughput target)")
        print(f"p99 {p99:.1f} ms")
        print(f"throughput {rps:.0f} req/s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
