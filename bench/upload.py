"""Benchmark: upload a 2 GiB docker-save archive over loopback to a real API process.

Starts ``uvicorn server.app:create_app`` in a subprocess (embedded mode, fresh data dir), creates a challenge,
a team and a token through the API, then sends the archive as one streamed request body
(``POST …/submissions``, Content-Length, zero-copy ``sendfile`` on the client side) and, as a second
figure, through the resumable protocol in 256 MiB Content-Range chunks. The server hashes (SHA-256),
checks the archive (tar headers, manifest, config) and writes it while it arrives.

Printed: throughput of each upload (MB/s, 10^6 bytes), the API's resident memory before and its peak
during the uploads (VmRSS sampled every 20 ms and VmHWM, from /proc/<pid>/status), and a plain local
file copy of the same archive measured in the same run as the reference. The last line is the
headline: one-shot upload throughput / local copy throughput.

    .venv/bin/python bench/upload.py [--gib 2] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stack import print_stack  # noqa: E402 (bench/ is the script directory, first on sys.path)

MB = 10**6


class _Repeat(io.RawIOBase):
    """``size`` bytes of a repeated pseudo-random 4 MiB block (incompressible enough, fast to make)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = hashlib.shake_256(b"segarena-bench").digest(4 << 20)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left, len(self.block) - self.pos)
        buf[:n] = self.block[self.pos : self.pos + n]
        self.pos = (self.pos + n) % len(self.block)
        self.left -= n
        return n


def make_archive(path: Path, size: int) -> None:
    """A valid single-image docker save archive (legacy layout) whose one layer is ``size`` bytes."""
    layer_name = "a" * 64 + "/layer.tar"
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "1000", "WorkingDir": "/workspace"},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((config_name, config),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(layer_name)
        info.size = size
        tar.addfile(info, io.BufferedReader(_Repeat(size), buffer_size=4 << 20))
        manifest = json.dumps([{"Config": config_name, "RepoTags": ["bench/model:latest"], "Layers": [layer_name]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):  # the process has exited
                return
            time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, method: str, path: str, token: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    out = json.loads(resp.read() or b"null")
    conn.close()
    if resp.status >= 400:
        raise RuntimeError(f"{method} {path}: {resp.status} {out}")
    return out


def send_file(port: int, method: str, path: str, token: str, archive: Path, *, offset: int = 0, count: int | None = None,
              extra_headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """Send ``count`` bytes of ``archive`` from ``offset`` as the body, with sendfile (no client-side copies)."""
    size = archive.stat().st_size
    count = size - offset if count is None else count
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}",
            "Content-Type: application/octet-stream", f"Content-Length: {count}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port)) as sock, open(archive, "rb") as f:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if count:
            sock.sendfile(f, offset, count)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.split(b"\r\n\r\n", 1)[1] or b"null")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="archive size in GiB (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    print_stack("fastapi", "starlette", "httpx", "sqlalchemy")  # the stack this figure comes from (bench/_stack.py)
    work = Path(tempfile.mkdtemp(prefix="segarena-bench-upload-"))
    proc = None
    try:
        archive = work / "model.tar"
        t = time.perf_counter()
        make_archive(archive, int(args.gib * 2**30))
        size = archive.stat().st_size
        print(f"archive: {size / 2**30:.2f} GiB ({size} bytes), made in {time.perf_counter() - t:.1f} s")

        # reference: a plain local file copy, same file system, same run
        t = time.perf_counter()
        shutil.copyfile(archive, work / "copy.tar")
        copy_s = time.perf_counter() - t
        (work / "copy.tar").unlink()
        copy_rate = size / copy_s / MB
        print(f"local file copy: {copy_s:.2f} s, {copy_rate:.0f} MB/s")

        port = _free_port()
        org = "sa_bench-organizer-token-0000000000"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_")},
               "SEGARENA_DATA_DIR": str(work / "data"), "SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN": org,
               "SEGARENA_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
        deadline = time.time() + 60
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/health")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("the API did not start") from None
                time.sleep(0.2)
        api(port, "POST", "/api/challenges", org, {"slug": "bench", "title": "Bench", "demo": True,
                                                  "tracks": [{"slug": "main", "quota_per_day": 100}]})
        team = api(port, "POST", "/api/teams", org, {"name": "bench"})
        token = api(port, "POST", f"/api/teams/{team['id']}/members", org, {"name": "uploader"})["token"]

        # warm-up: a small upload, so imports, threads and pools exist before the baseline
        small = work / "small.tar"
        make_archive(small, 3 << 20)
        status, body = send_file(port, "POST", "/api/challenges/bench/tracks/main/submissions?label=warmup", token, small)
        assert status == 201, body
        api(port, "POST", f"/api/submissions/{body['id']}/cancel", token)

        base = rss_kib(proc.pid)
        sampler = Sampler(proc.pid)
        sampler.start()
        t, cpu0 = time.perf_counter(), cpu_s(proc.pid)
        status, body = send_file(port, "POST", "/api/challenges/bench/tracks/main/submissions?label=bench", token, archive)
        one_shot_s = time.perf_counter() - t
        one_shot_cpu = cpu_s(proc.pid) - cpu0
        assert status == 201, body
        one_shot_rate = size / one_shot_s / MB
        print(f"one-shot upload: {one_shot_s:.2f} s, {one_shot_rate:.0f} MB/s, API CPU {one_shot_cpu:.2f} s "
              f"(state {body['state']}, sha256 {body['archive_sha256'][:12]}…, image {body['image_id'][:19]}…)")
        api(port, "POST", f"/api/submissions/{body['id']}/cancel", token)

        # resumable: 256 MiB Content-Range chunks
        chunk = 256 << 20
        up = api(port, "POST", "/api/challenges/bench/tracks/main/uploads", token, {"total_bytes": size, "filename": "model.tar"})
        t = time.perf_counter()
        offset = 0
        while offset < size:
            n = min(chunk, size - offset)
            status, got = send_file(port, "PUT", f"/api/uploads/{up['upload_id']}", token, archive, offset=offset, count=n,
                                    extra_headers={"Content-Range": f"bytes {offset}-{offset + n - 1}/{size}"})
            assert status == 200, got
            offset = got["received_bytes"]
        status, done = send_file(port, "POST", f"/api/uploads/{up['upload_id']}/complete", token, archive, count=0)
        resumable_s = time.perf_counter() - t
        assert status == 201, done  # the one-shot submission of the same image was cancelled: accepted again
        resumable_rate = size / resumable_s / MB
        print(f"resumable upload ({chunk >> 20} MiB chunks, same sha256: {done['archive_sha256'] == body['archive_sha256']}): "
              f"{resumable_s:.2f} s, {resumable_rate:.0f} MB/s")
        sampler.stop.set()
        sampler.join()
        peak = max(sampler.peak, rss_kib(proc.pid, "VmHWM"))
        growth = (peak - base) / 1024
        print(f"API resident memory: {base / 1024:.1f} MiB before, {peak / 1024:.1f} MiB peak, growth {growth:.1f} MiB "
              f"(limit 64 MiB: {'ok' if growth <= 64 else 'EXCEEDED'})")
        print(f"one-shot upload {one_shot_rate:.0f} MB/s (target >= 200: {'ok' if one_shot_rate >= 200 else 'MISSED'})")
        print(f"upload/local-copy throughput ratio: {one_shot_rate / copy_rate:.3f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
