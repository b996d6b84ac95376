"""Benchmark of the Docker sandbox (worker/sandbox.py), against a reference measured in the same run.

1. Per-case overhead: the platform's whole per-case path (``run_case``: case directories, container
   create with every cap, attach, start, wait, inspect, cgroup reads, remove) on an image whose
   predict.sh does nothing, against a bare ``docker run --rm IMAGE true`` of the same image (the
   reference's way, via the CLI), interleaved; ratio of medians. Target ≤ 1.3.
2. Runtime stability: a deterministic, single-threaded CPU-bound image timed N times by the
   sandbox; coefficient of variation of the recorded runtime. Target ≤ 3 %.

Usage: ``.venv/bin/python bench/sandbox.py [--n 10]``. The last line is the overhead ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stack import print_stack  # noqa: E402 (bench/ is the script directory, first on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="repetitions of each measurement")
    from api.settings import DEFAULT_BASE_IMAGE
    ap.add_argument("--base-image", default=os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE))
    ap.add_argument("--cpuset", default="", help="cores for the containers (default: the last online core; the "
                                                 "benchmark process itself then keeps off it, as a worker host should)")
    args = ap.parse_args()
    print_stack("docker")  # the stack this figure comes from (bench/_stack.py)

    import docker

    from tests.worker_helpers import build_test_image, make_testset
    from worker import sandbox as sb

    client = docker.from_env(timeout=600)
    noop = build_test_image(client, args.base_image, "noop")
    burn = build_test_image(client, args.base_image, "cpuburn")
    online = sb.online_cpus()
    cpuset = args.cpuset or sb.format_cpuset(online[-1:])
    rest = set(online) - set(sb.parse_cpuset(cpuset))
    if rest:
        os.sched_setaffinity(0, rest)
    profile = sb.SandboxProfile(memory_bytes=8 * 1024**3, cpus=1.0, timeout_s=120, cpuset=cpuset,
                                cgroup_parent=sb.CgroupMeter.usable_parent("segarena-bench"))
    with tempfile.TemporaryDirectory(prefix="segarena-bench-") as tmp_name:
        tmp = Path(tmp_name)
        make_testset(tmp / "set", n2d=1, n3d=0)
        case = tmp / "set" / "inputs" / "2DBox_US_0000.npz"
        labels = {sb.LABEL_RUN: "bench", sb.LABEL_CASE: case.stem}

        def platform(image: str, i: int) -> tuple[float, sb.CaseRun]:
            t0 = time.monotonic()
            cr = sb.run_case(client, image_id=image, input_file=case, out_dir=tmp / f"out-{image[7:19]}-{i}",
                             profile=profile, labels=labels, scratch_dir=tmp)
            return time.monotonic() - t0, cr

        def bare() -> float:
            t0 = time.monotonic()
            subprocess.run(["docker", "run", "--rm", noop, "true"], check=True, stdout=subprocess.DEVNULL)
            return time.monotonic() - t0

        bare(), platform(noop, -1)  # warm-up (page cache, engine)
        ref, ours = [], []
        for i in range(args.n):
            ref.append(bare())
            ours.append(platform(noop, i)[0])
        ratio = statistics.median(ours) / statistics.median(ref)

        burn_code = ("acc = 0\nfor i in range(12_000_000):\n    acc = (acc + i * i) % 1_000_003\nprint(acc)")
        core = profile.pinned_cores()

        def native() -> float:
            """The same loop straight on the host, pinned to the same core: the machine's own noise."""
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-c", burn_code], check=True, stdout=subprocess.DEVNULL,
                           preexec_fn=lambda: os.sched_setaffinity(0, core))
            return time.monotonic() - t0

        runs, host = [], []
        for i in range(args.n):  # interleaved, so both see the same machine
            host.append(native())
            runs.append(platform(burn, 100 + i)[1])
        if any(not r.ok for r in runs):
            raise SystemExit(f"cpuburn failed: {[r.reason for r in runs if not r.ok][:1]}")
        times = [r.runtime_s for r in runs]
        cpu = [r.cpu_s for r in runs if r.cpu_s is not None]
        cv = statistics.pstdev(times) / statistics.fmean(times)
        cpu_cv = statistics.pstdev(cpu) / statistics.fmean(cpu) if len(cpu) > 1 else float("nan")
        host_cv = statistics.pstdev(host) / statistics.fmean(host)
        load = os.getloadavg()[0]

    print(f"bare `docker run --rm IMAGE true`: median {statistics.median(ref):.3f} s "
          f"(min {min(ref):.3f}, max {max(ref):.3f}, n={args.n})")
    print(f"platform run_case (all caps, measured, removed): median {statistics.median(ours):.3f} s "
          f"(min {min(ours):.3f}, max {max(ours):.3f}, n={args.n})")
    print(f"stability: cpuburn runtime mean {statistics.fmean(times):.3f} s, CV {100 * cv:.2f} % "
          f"(target <= 3 %), cpu time mean {statistics.fmean(cpu) if cpu else float('nan'):.3f} s, n={args.n}; "
          f"cores {profile.pinned_cores()}, {sb.cpu_model()}")
    print(f"  runtimes: {' '.join(f'{t:.3f}' for t in times)}; cpu-time CV {100 * cpu_cv:.2f} %; "
          f"host load average {load:.2f} on {os.cpu_count()} cores (other work on the pinned core inflates the CV)")
    print(f"  reference: the same loop run natively on the same core, interleaved: mean {statistics.fmean(host):.3f} s, "
          f"CV {100 * host_cv:.2f} % (the machine's own noise; the sandbox adds {100 * (cv - host_cv):+.2f} points)")
    print(f"overhead ratio (platform / bare docker run, target <= 1.3): {ratio:.2f}")


if __name__ == "__main__":
    main()
