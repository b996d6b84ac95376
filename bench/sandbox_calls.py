"""Benchmark (issues 12/14): where the time of one sandboxed run of a no-op image goes, per Docker API call.

    .venv/bin/python bench/sandbox_calls.py [--repeat 20]

Times each step of ``worker.sandbox.run_case`` on the base image with the command ``true`` (``predict.sh`` is
replaced by an image whose predict.sh writes nothing and exits 0): the directory set-up, ``create``,
``attach``, ``start``, ``wait`` (start to exit as the engine reports it), ``inspect``, ``remove``; then the whole
``run_case`` call with the container's runtime and the wait for the pinned cores' locks (held by other timed runs on
this host) subtracted, once creating and removing inline and once with the container created ahead
(``prepare_container``) and removed in the background (``remove="async"``). Medians
over ``--repeat`` runs; the machine may be loaded, so compare the parts within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _stack import print_stack  # bench/ is the script directory, first on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print_stack("docker")  # the stack this figure comes from (bench/_stack.py)

    from tests.worker_helpers import build_test_image
    from worker import sandbox as sb
    from worker.sandbox.container import _create, container_params, _prepare_dirs
    from worker.sandbox.output import BoundedLog, close_attach, pump_logs

    import threading

    from api.settings import DEFAULT_BASE_IMAGE
    base = os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    client = sb.get_docker_client()
    image = build_test_image(client, base, "noop")
    profile = sb.SandboxProfile(timeout_s=60, memory_bytes=512 * 1024**2, cpus=1.0)
    tmp = Path(tempfile.mkdtemp(prefix="segarena-bench-calls-"))
    inp = tmp / "case.npz"
    inp.write_bytes(b"x" * 1024)
    user = sb.resolve_user(client, image, allow_root=False)[0]
    steps: dict[str, list[float]] = {k: [] for k in ("dirs", "create", "attach", "start", "wait", "inspect", "remove",
                                                      "total", "fast", "lock")}
    api = client.api
    for i in range(args.repeat):
        t = time.perf_counter()
        work, inputs = _prepare_dirs(inp, tmp / f"out{i}", tmp)
        t1 = time.perf_counter()
        params = container_params(image_id=image, inputs_dir=inputs, outputs_dir=tmp / f"out{i}", profile=profile,
                                  user=user, labels={sb.LABEL_WORKER: sb.worker_identity(), "segarena.bench": "1"})
        cid = _create(client, params)
        t2 = time.perf_counter()
        sock = api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
        out, err = BoundedLog(1024), BoundedLog(1024)
        pump = threading.Thread(target=pump_logs, args=(sock, out, err), daemon=True)
        pump.start()
        t3 = time.perf_counter()
        api.start(cid)
        t4 = time.perf_counter()
        api.wait(cid, timeout=60)
        t5 = time.perf_counter()
        pump.join(5)
        close_attach(sock)
        api.inspect_container(cid)
        t6 = time.perf_counter()
        api.remove_container(cid, force=True)
        t7 = time.perf_counter()
        for k, v in zip(steps, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
            steps[k].append(v)
        t = time.perf_counter()
        run = sb.run_case(client, image_id=image, input_file=inp, out_dir=tmp / f"rc{i}", profile=profile,
                          labels={"segarena.bench": "1"}, scratch_dir=tmp, run_user=(user, "bench"))
        steps["total"].append(time.perf_counter() - t - run.runtime_s - run.lock_wait_s)
        steps["lock"].append(run.lock_wait_s)
        # the fast path: created ahead (here just before; in the worker during the download / round trip), removed
        # in the background
        prepared = sb.prepare_container(client, image_id=image, out_dir=tmp / f"ra{i}", profile=profile,
                                        labels={"segarena.bench": "1"}, scratch_dir=tmp, run_user=(user, "bench"))
        t = time.perf_counter()
        run = sb.run_case(client, image_id=image, input_file=inp, out_dir=tmp / f"ra{i}", profile=profile,
                          labels={"segarena.bench": "1"}, scratch_dir=tmp, run_user=(user, "bench"),
                          prepared=prepared, remove="async")
        assert run.precreated
        steps["fast"].append(time.perf_counter() - t - run.runtime_s - run.lock_wait_s)
        steps["lock"].append(run.lock_wait_s)
        sb.flush_removals(30)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.repeat} repetitions, medians:")
    for k, v in steps.items():
        label = {"total": "run_case (create, remove inline) - runtime", "fast": "run_case (created ahead, async) - runtime",
                 "lock": "core-lock wait (other runs; excluded)"}.get(k, k)
        print(f"  {label:40s} {statistics.median(v) * 1000:8.1f} ms   (p90 {sorted(v)[int(len(v) * 0.9) - 1] * 1000:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
