"""Helpers of the resilience suite (issue 9): the hostile suite (the behaviours of tests/behaviours.py with
``resilience=True``, through the real execution path), the malformed-upload corpus, host checks (leftover
containers, files, processes) and the report table.

Used by tests/resilience/ and bench/resilience.py.
Nothing here talks to anything but this machine's Docker engine, files and 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

from tests.behaviours import BEHAVIOURS, RESILIENCE_KINDS, probes
from tests.servers import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
ORPHAN_MARKER = b"segarena-hostile-orphan"
PICKLE_MARKER = Path("/tmp/segarena-pwned-pickle")

__all__ = [
    "Listener", "build_hostile_images", "malformed_uploads", "host_processes_with", "segarena_containers",
    "files_under", "probes",
    "format_table", "print_report", "ReportRow", "run_hostile_suite", "hostile_row", "HOSTILE_TRACK",
    "Observed", "FaultRig", "FaultFigures", "format_faults", "FAULTS", "ORPHAN_MARKER", "PICKLE_MARKER",
]


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
class Listener:
    """A TCP listener on the host's 127.0.0.1 that counts the connections it accepted."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resilience-listener", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def build_hostile_images(client: Any, base_image: str, kinds: list[str], *, listener_port: int = 0) -> dict[str, str]:
    """Build the test images of the behaviours ``kinds`` (tests/behaviours.py; ``network`` with the listener's port
    baked in); returns kind -> image id. Layer caching makes rebuilds cheap."""
    from tests.worker_helpers import build_test_image

    return {kind: build_test_image(client, base_image, kind,
                                   **({"LISTENER_PORT": listener_port} if kind == "network" else {}))
            for kind in kinds}


# ---------------------------------------------------------------------------------------------
# malformed uploads
# ---------------------------------------------------------------------------------------------
def _tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def malformed_uploads(make_image_tar: Callable[..., bytes]) -> dict[str, tuple[bytes, str]]:
    """The malformed-upload corpus: name -> (archive bytes, what is wrong with it).

    ``make_image_tar`` is the API tests' in-memory ``docker save`` builder (tests/api_helpers.py);
    each entry is a valid archive broken in exactly one way. (Over-the-limit and a wrong
    Content-Range are made by the test itself: they depend on the server's settings.)
    """
    valid = make_image_tar(tag="hostile/model:latest")
    valid_gz = make_image_tar(tag="hostile/model:latest", gzip=True)

    def traversal(tar: tarfile.TarFile) -> None:
        _tar_member(tar, "../../../../tmp/segarena-escape", b"escaped")

    def absolute(tar: tarfile.TarFile) -> None:
        _tar_member(tar, "/tmp/segarena-escape-abs", b"escaped")

    def symlink_out(tar: tarfile.TarFile) -> None:
        _tar_member(tar, "evil-link", type=tarfile.SYMTYPE, linkname="/etc/passwd")

    def hardlink_out(tar: tarfile.TarFile) -> None:
        _tar_member(tar, "evil-hardlink", type=tarfile.LNKTYPE, linkname="../../../../etc/passwd")

    def device(tar: tarfile.TarFile) -> None:
        _tar_member(tar, "evil-device", type=tarfile.CHRTYPE, devmajor=1, devminor=3)

    # two images: the manifest of a second archive's image appended next to the first
    two = _two_images(make_image_tar)
    no_manifest = _drop_member(valid, "manifest.json")
    return {
        "zero_bytes": (b"", "an empty body"),
        "truncated_gzip": (valid_gz[: len(valid_gz) // 2], "a gzip stream cut in the middle"),
        "gzip_garbage": (b"\x1f\x8b\x08\x00" + os.urandom(2048), "a gzip header followed by garbage"),
        "not_a_tar": (b"this is not a docker save archive\n" * 64, "plain text"),
        "random_bytes": (os.urandom(8192), "random bytes"),
        "truncated_tar": (valid[: len(valid) // 2], "a tar cut in the middle"),
        "no_manifest": (no_manifest, "a tar without manifest.json"),
        "bad_manifest_json": (_replace_member(valid, "manifest.json", b"[{not json"),
                              "manifest.json that is not JSON"),
        "path_traversal": (make_image_tar(extra_members=traversal), "a member named ../../../../tmp/..."),
        "absolute_path": (make_image_tar(extra_members=absolute), "a member with an absolute path"),
        "symlink_out": (make_image_tar(extra_members=symlink_out), "a symlink member pointing to /etc/passwd"),
        "hardlink_out": (make_image_tar(extra_members=hardlink_out), "a hard link pointing outside"),
        "device_node": (make_image_tar(extra_members=device), "a character device member"),
        "two_images": (two, "two images in one archive"),
        "manifest_missing_config": (make_image_tar(manifest=[{"Config": "nope.json", "RepoTags": ["a/b:c"],
                                                              "Layers": []}]),
                                    "manifest.json naming a config that is not in the archive"),
    }


def _members(raw: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isfile() else None
            out.append((info, data))
    return out


def _rebuild(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _drop_member(raw: bytes, name: str) -> bytes:
    return _rebuild([(i, d) for i, d in _members(raw) if i.name != name])


def _replace_member(raw: bytes, name: str, data: bytes) -> bytes:
    out = []
    for info, content in _members(raw):
        if info.name == name:
            info.size = len(data)
            content = data  # noqa: PLW2901 (the replaced member's content)
        out.append((info, content))
    return _rebuild(out)


def _two_images(make_image_tar: Callable[..., bytes]) -> bytes:
    first = _members(make_image_tar(tag="team/one:latest", salt="one"))
    second = _members(make_image_tar(tag="team/two:latest", salt="two"))
    manifest = []
    merged: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for members in (first, second):
        for info, data in members:
            if info.name == "manifest.json":
                manifest.extend(json.loads(data))
            else:
                merged[info.name] = (info, data)
    body = json.dumps(manifest).encode()
    info = tarfile.TarInfo("manifest.json")
    info.size = len(body)
    return _rebuild([*merged.values(), (info, body)])


# ---------------------------------------------------------------------------------------------
# host checks
# ---------------------------------------------------------------------------------------------
def host_processes_with(marker: bytes) -> list[int]:
    """Host pids whose command line contains ``marker`` (container processes included)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def segarena_containers(client: Any, *labels: str) -> list[dict[str, Any]]:
    """Containers (any state) carrying all the given labels ("key" or "key=value"; default: SegArena's
    run label). Low-level listing: no per-container inspect, which a wedged container would block."""
    from worker.sandbox import LABEL_RUN

    return client.api.containers(all=True, filters={"label": list(labels) or [LABEL_RUN]})


def files_under(*dirs: Path) -> list[Path]:
    """Every file (or link) under the given directories (missing directories are empty)."""
    out: list[Path] = []
    for d in dirs:
        if d.exists():
            out.extend(p for p in Path(d).rglob("*") if p.is_file() or p.is_symlink())
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
@dataclass
class ReportRow:
    kind: str
    expected: str
    observed: str
    lost: int = 0
    duplicated: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def format_table(rows: list[ReportRow], *, title: str = "") -> str:
    """The report table: kind, expected reason, observed reason, lost, duplicated (plus a note)."""
    head = ("kind", "expected", "observed", "lost", "dup", "note")
    body = [(r.kind, r.expected, r.observed, str(r.lost), str(r.duplicated), r.note) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    widths[-1] = min(widths[-1], 110)
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [title] if title else []
    out.append(line.format(*head))
    out.append("  ".join("-" * w for w in widths))
    for row in body:
        out.append(line.format(*row[:-1], row[-1][:110]))
    return "\n".join(out)


def print_report(request: Any, text: str) -> None:
    """Print a report table on the terminal from a fixture's teardown (past pytest's capture)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capman is None or reporter is None:
        print(text)
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line("")
        for line in text.splitlines():
            reporter.write_line(line)


def gunzip_if(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


# ---------------------------------------------------------------------------------------------
# faults during a run: private services, a worker process, one scenario = a fresh queue
# ---------------------------------------------------------------------------------------------
def _wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    return wait_until(predicate, timeout, what, interval=interval)


class PrivateRedis:
    """A redis-server of our own on a free 127.0.0.1 port (never the shared 6379)."""

    def __init__(self, workdir: Path) -> None:
        import subprocess

        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until(self.ping, 20, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        import subprocess

        r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], check=False, capture_output=True, text=True)
        return r.stdout.strip() == "PONG"

    def restart(self, down_s: float = 1.0) -> None:
        """``shutdown nosave`` (every queued message is lost), then start again on the same port."""
        import subprocess
        import time

        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False, capture_output=True)
        if self.proc is not None:
            self.proc.wait(timeout=20)
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False, capture_output=True)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class PrivateDocker:
    """A throwaway Docker engine (its own data root, exec root, managed containerd and socket under one /tmp
    directory; a bridge interface of its own, no iptables) holding a copy of the base image: a test may stop and
    restart it without touching the engine every other test uses.

    Its bridge is its own (``sa-br-<hex>``, deleted with it): ``--bridge none`` would make the engine delete the
    host's ``docker0`` at start-up, the shared engine's default network."""

    def __init__(self, shared_client: Any, base_image: str) -> None:
        import secrets
        import subprocess

        import docker

        self.dir = Path(tempfile.mkdtemp(prefix="segarena-docker-"))  # short: the socket path must fit 108 bytes
        self.host = f"unix://{self.dir}/docker.sock"
        self.proc: Any = None
        self.bridge = "sa-br-" + secrets.token_hex(4)  # an interface name: at most 15 characters
        try:
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
            self.start()
            self.client = docker.DockerClient(base_url=self.host, timeout=120)
            # the base image, streamed from the shared engine (docker save | docker load): ~5 s for 343 MB
            self.client.images.load(shared_client.api.get_image(base_image))
        except BaseException:
            self.destroy()
            raise

    def _ping(self) -> bool:
        import subprocess

        return subprocess.run(["docker", "-H", self.host, "version"], check=False, capture_output=True).returncode == 0

    def start(self) -> None:
        import subprocess

        d = self.dir
        argv = ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"), "-H", self.host,
                "--pidfile", str(d / "docker.pid"), "--bridge", self.bridge, "--iptables=false", "--ip6tables=false",
                "--ip-masq=false", "--userland-proxy=false"]
        with open(d / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or self._ping(), 60,
                   f"the private dockerd to answer (see {d / 'dockerd.log'})", interval=0.25)
        assert self.proc.poll() is None, (d / "dockerd.log").read_text()[-2000:]

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it (its containers are stopped with it); wait for the exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        import subprocess

        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        try:
            self.stop()
        except Exception:  # it did not exit within a minute
            self.proc.kill()
            self.proc.wait(timeout=30)
        # what a killed engine left mounted (its clean exit unmounts everything)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if len(line.split()) > 1 and line.split()[1].startswith(str(self.dir))]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl as the postgres user) on a free port."""

    def __init__(self, workdir: Path) -> None:
        import pwd

        self.port = free_port()
        # directly under /tmp: pytest's own temporary directories are not traversable by postgres
        self.dir = Path(tempfile.mkdtemp(prefix="segarena-pg-"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self._as_postgres(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                           "--no-sync"])
        self.start()

    def _bin(self, name: str) -> str:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: float(p.parent.name))
        return str(versions[-1] / name) if versions else name

    def _as_postgres(self, argv: list[str]) -> None:
        import subprocess

        argv = [self._bin(argv[0]), *argv[1:]]
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._as_postgres(["pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self, down_s: float = 1.0) -> None:
        """Stop immediately (as a crash would), then start again."""
        import time

        self.stop("immediate")
        time.sleep(down_s)
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class FaultFigures:
    fault: str
    submissions: int
    final: int  # reached succeeded/failed/cancelled
    succeeded: int
    lost: int  # never reached a final state, or failed for an infrastructure reason
    duplicated: int  # case results counted twice within one attempt, or aggregates over more cases than exist
    attempts: int  # shard deliveries in total (requeues after a fault included)
    elapsed_s: float
    note: str = ""


FAULTS = ("none", "worker_sigkill", "redis_restart", "postgres_restart", "storage_unwritable", "docker_restart")


class FaultRig:
    """A private PostgreSQL, the ``slow`` test image (about 2 s per case), a 2-case test set; :meth:`scenario`
    runs a fresh queue of submissions through THE execution path as real processes — the API
    (``uvicorn server.app:create_app`` on 127.0.0.1), the trusted scorer (``segarena scorer``: scoring and the reaper
    beat), one execution worker (``python -m worker.exec_tasks``: API URL, worker token and broker only) and a
    private Redis (tests/scaleout_helpers.ScaleStack) — with one fault mid-case.

    The stack is started once, by the first scenario, and lives through the rig's scenarios, as a deployment lives
    through its faults: each scenario seeds a track of its own and counts only its own submissions, runs, shards and
    containers, on a stack that has come through the faults before it (the next scenario starts only once every
    submission of the last one is final)."""

    def __init__(self, client: Any, base_image: str, workdir: Path, *, submissions: int = 3,
                 private_docker: bool = False) -> None:
        """``private_docker``: run the containers on an engine of the rig's own (:class:`PrivateDocker`), which the
        ``docker_restart`` fault restarts; otherwise on ``client``'s engine."""
        from tests.worker_helpers import make_testset

        self.base_image = base_image
        self.workdir = Path(workdir)
        self.submissions = submissions
        self.engine: PrivateDocker | None = None
        self.pg = PrivatePostgres(self.workdir)
        try:
            if private_docker:
                self.engine = PrivateDocker(client, base_image)
                client = self.engine.client
            self.client = client
            self.image_id = build_hostile_images(client, base_image, ["slow"])["slow"]
        except BaseException:
            self.close()
            raise
        self.testset = make_testset(self.workdir / "testset", n2d=1, n3d=1)
        self.cases = 2
        self.archive = self.workdir / "image.tar"
        self.archive.write_bytes(b"placeholder: the image is already on the engine")
        self._n = 0
        self.figures: dict[str, FaultFigures] = {}  # fault -> what its scenario measured
        self.stack: Any = None  # tests/scaleout_helpers.ScaleStack, started by the first scenario
        self.url = ""  # its database
        self.workers: list[str] = []  # its execution workers, the live one last

    def _started_stack(self) -> Any:
        """The rig's stack: a database of its own on the private PostgreSQL, the API, the scorer, a private Redis
        and one execution worker; started on first use."""
        if self.stack is not None:
            return self.stack
        from tests.scaleout_helpers import ScaleStack

        self.url = self.pg.create_db("faults")
        # a lost worker's shard is requeued after 4 s without a heartbeat (heartbeats every second)
        self.stack = ScaleStack(self.workdir / "stack", database_url=self.url, shard_heartbeat_s=1.0,
                                heartbeat_timeout_s=4, reaper_interval_s=1,
                                extra_env={"SEGARENA_MAX_ATTEMPTS": "5", "SEGARENA_REQUEUE_AFTER_S": "8"},
                                docker_host=self.engine.host if self.engine is not None else None)
        self.stack.start_trusted()
        self.stack.create_worker_token()
        self.workers = ["w1"]
        self.stack.start_worker("w1")
        self.stack.wait_workers(["w1"])
        return self.stack

    def close(self) -> None:
        from api.db import dispose_engines

        from tests.scaleout_helpers import stack_containers

        try:
            if self.stack is not None:
                self.stack.stop()
                for c in stack_containers(self.client, self.stack):
                    try:
                        self.client.api.remove_container(c["Id"], force=True)
                    except Exception:
                        pass
                dispose_engines()
        finally:
            self.pg.destroy()
            if self.engine is not None:
                self.engine.destroy()

    # -- one scenario ----------------------------------------------------------------------
    def scenario(self, fault: str, *, timeout: float = 240.0) -> FaultFigures:
        import signal
        import subprocess
        import time

        from sqlalchemy import func, select

        from api.db import session_scope
        from api.models import FINAL_STATES, CaseResult, Run, Shard, Submission, SubmissionState
        from tests.scaleout_helpers import stack_containers
        from tests.worker_helpers import seed_track

        assert fault in FAULTS, fault
        self._n += 1
        stack = self._started_stack()
        url = self.url
        storage = stack.settings.storage_dir
        mounted = False
        note = ""
        with session_scope(url) as s:
            track = seed_track(s, testset=str(self.testset), slug=f"faults{self._n}", case_timeout_s=30)
            track_id = track.id
        image = {"image_id": self.image_id, "path": self.archive, "sha256": "0" * 64,
                 "bytes": self.archive.stat().st_size}
        started = time.monotonic()
        ids = [stack.submit(track_id, f"team-{self._n}-{i}", image) for i in range(self.submissions)]
        runs = {str(run_id) for _sub, run_id in ids}
        try:
            def running_container():
                return [c for c in stack_containers(self.client, stack)
                        if c.get("State") == "running" and (c.get("Labels") or {}).get("segarena.run") in runs]

            if fault != "none":
                _wait_until(running_container, 90, "the first case container")
                time.sleep(0.5)  # mid-case
                if fault == "worker_sigkill":
                    stack.kill(self.workers[-1], signal.SIGKILL)
                    self.workers.append(f"w{len(self.workers) + 1}")
                    stack.start_worker(self.workers[-1])
                elif fault == "redis_restart":
                    stack.redis.restart()
                elif fault == "postgres_restart":
                    self.pg.restart()
                elif fault == "storage_unwritable":
                    subprocess.run(["mount", "--bind", str(storage), str(storage)], check=True)
                    mounted = True
                    subprocess.run(["mount", "-o", "remount,bind,ro", str(storage)], check=True)
                    time.sleep(4.0)
                    subprocess.run(["umount", str(storage)], check=True)
                    mounted = False
                elif fault == "docker_restart":
                    assert self.engine is not None, "the docker_restart fault needs FaultRig(private_docker=True)"
                    self.engine.restart()

            sub_ids = [i for i, _ in ids]

            def all_final() -> bool:
                with session_scope(url) as s:
                    states = s.execute(select(Submission.state).where(Submission.id.in_(sub_ids))).scalars()
                    return all(st in FINAL_STATES for st in states)

            try:
                _wait_until(all_final, timeout, "every submission to reach a final state", interval=0.25)
            except TimeoutError as exc:
                note = f"{exc}\n{stack.log_tail(1500)}"
            elapsed = time.monotonic() - started
            with session_scope(url) as s:
                subs = [s.get(Submission, i) for i in sub_ids]
                final = sum(1 for x in subs if x.state in FINAL_STATES)
                succeeded = sum(1 for x in subs if x.state == SubmissionState.succeeded)
                lost = sum(1 for x in subs if x.state not in FINAL_STATES or
                           (x.state == SubmissionState.failed and not x.reason.startswith("every case failed")))
                # deliveries of this scenario's shards in total (a requeue after a fault is one more delivery)
                scenario_runs = select(Run.id).where(Run.submission_id.in_(sub_ids))
                attempts = int(s.scalar(select(func.coalesce(func.sum(Shard.deliveries), 0))
                                        .where(Shard.run_id.in_(scenario_runs))) or 0)
                duplicated = 0
                for x in subs:
                    runs = s.execute(select(Run.id).where(Run.submission_id == x.id)).scalars().all()
                    for rid in runs:
                        rows = s.scalar(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == rid))
                        distinct = s.scalar(select(func.count(func.distinct(CaseResult.case_id)))
                                            .where(CaseResult.run_id == rid))
                        duplicated += rows - distinct
                    counted = int((x.aggregates or {}).get("n") or 0)
                    duplicated += max(0, counted - self.cases)  # aggregates over more cases than the set has
                if not note:
                    shards = s.execute(select(Shard).where(Shard.run_id.in_(scenario_runs))).scalars()
                    reasons = sorted({r.reason.split(":")[0][:40] for r in shards if r.reason})
                    note = "; ".join(reasons)[:120]
            return FaultFigures(fault, len(ids), final, succeeded, lost, duplicated, attempts, elapsed, note)
        finally:
            if mounted:
                subprocess.run(["umount", str(storage)], check=False)


@contextlib.contextmanager
def fault_rig(client: Any, base_image: str, workdir: Path, request: Any, *, baseline: bool,
              private_docker: bool = False) -> Iterator[FaultRig]:
    """A module's :class:`FaultRig` (``baseline``: the undisturbed scenario "none" run first, the reference of the
    other rows' extra time; ``private_docker``: on an engine of its own); its fault table is printed at teardown."""
    from tests.conftest import require

    for tool in ("redis-server", "redis-cli", "runuser", "mount"):
        require(shutil.which(tool) is not None, tool)
    require(Path("/usr/lib/postgresql").exists(), "PostgreSQL's server binaries (initdb, pg_ctl)")
    require(os.geteuid() == 0, "root (to run initdb as postgres and to bind-mount the storage read-only)")
    if private_docker:
        require(shutil.which("dockerd") is not None, "dockerd (the Docker engine's daemon)")
        require(shutil.which("ip") is not None, "ip (iproute2: the private engine's bridge)")
    rig = FaultRig(client, base_image, workdir, private_docker=private_docker)
    try:
        if baseline:
            rig.figures["none"] = rig.scenario("none")
        yield rig
    finally:
        print_report(request, format_faults([rig.figures[k] for k in FAULTS if k in rig.figures]))
        rig.close()


def assert_nothing_lost(f: FaultFigures) -> None:
    """Every submission of the scenario ended, succeeded, with each case counted once."""
    assert f.note == "" or "timed out" not in f.note, f.note
    assert f.final == f.submissions, f
    assert f.lost == 0, f
    assert f.duplicated == 0, f
    assert f.succeeded == f.submissions, f


def format_faults(figures: list[FaultFigures]) -> str:
    """The fault table: lost, duplicated, final, attempts, extra time vs the undisturbed run."""
    base = next((f.elapsed_s for f in figures if f.fault == "none"), None)
    rows = []
    for f in figures:
        ratio = f"{f.elapsed_s / base:.2f}x" if base else "-"
        rows.append(ReportRow(kind=f.fault, expected="0 lost, 0 dup", observed=f"{f.final}/{f.submissions} final",
                              lost=f.lost, duplicated=f.duplicated,
                              note=f"{f.elapsed_s:.1f} s ({ratio}), {f.attempts} shard deliveries; {f.note}"))
    return format_table(rows, title="resilience: faults during a run (API, scorer, execution worker processes, "
                                    "Redis, PostgreSQL, Docker)")


# ---------------------------------------------------------------------------------------------
# the hostile suite through the real worker
# ---------------------------------------------------------------------------------------------
@dataclass
class Observed:
    kind: str
    run_state: str = ""
    sub_state: str = ""
    sub_reason: str = ""
    cases: list[dict] = field(default_factory=list)
    case_rows: int = 0
    cases_total: int = 0
    sent: list = field(default_factory=list)
    leftover_containers: list = field(default_factory=list)
    leftover_scratch: list = field(default_factory=list)
    orphans: list = field(default_factory=list)
    control_state: str = ""
    control_dsc: float | None = None
    error: str = ""
    seconds: float = 0.0
    user: str | None = None

    @property
    def statuses(self) -> list[str]:
        return [c["status"] for c in self.cases]

    def probe_values(self) -> list[dict[str, str]]:
        return [probes(c["stdout"], c["stderr"]) for c in self.cases]


def _run_one(host, *, track_id: int, team: str, image_id: str, archive: Path) -> tuple[int, int, list]:
    """A submission of ``image_id`` run to its end through the sharded path (``host``: a
    :class:`tests.run_helpers.ShardedHost`); returns (submission, run, infrastructure requeues sent)."""
    from tests.run_helpers import create_run

    sub_id, run_id = create_run(host.settings, testset="", image_id=image_id, archive=archive, team=team,
                                track=track_id)
    result = host.run(run_id)
    return sub_id, run_id, list(result.requeues)


def _observe(settings, sub_id: int, run_id: int, obs: Observed) -> None:
    from sqlalchemy import func, select

    from api.db import session_scope
    from api.models import CaseResult, Run, Submission

    with session_scope(settings.database_url) as s:
        run, sub = s.get(Run, run_id), s.get(Submission, sub_id)
        obs.run_state, obs.sub_state, obs.sub_reason = run.state.value, sub.state.value, sub.reason
        obs.cases_total = run.cases_total
        rows = s.execute(select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.id)).scalars().all()
        obs.case_rows = s.execute(select(func.count()).select_from(CaseResult)
                                  .where(CaseResult.run_id == run_id)).scalar_one()
        obs.cases = [dict(case=c.case_id, status=c.status.value, reason=c.reason, stdout=c.stdout_tail,
                          stderr=c.stderr_tail, exit_code=c.exit_code, runtime_s=c.runtime_s) for c in rows]
        obs.user = (run.container_params or {}).get("user")


HOSTILE_TRACK = dict(memory_mb=256, cpus=1.0, case_timeout_s=5, total_timeout_s=600, pids_limit=64, tmpfs_mb=32,
                     allow_root=False)


def run_hostile_suite(docker_client: Any, base_image: str, tmp: Path, *, track: dict[str, Any] | None = None,
                      kinds: list[str] | None = None) -> dict[str, Observed]:
    """Build the hostile images and run every kind through the real execution path (the sharded path: the real
    API app, an execution host ``ShardExecutor`` with the real sandbox, the trusted scorer inline; SQLite, a 2-case
    test set; tests/run_helpers.py), each followed by another team's well-behaved control run (a 1-case test set of
    its own, on a track with the same limits); returns
    kind -> :class:`Observed` (plus ``__reference__``, ``__listener__`` and ``__pickle__``)."""
    import time

    from api.db import migrate, session_scope
    from api.settings import Settings
    from tests.worker_helpers import make_testset, seed_track
    from worker import sandbox as sb

    track = dict(track or HOSTILE_TRACK)
    data = tmp / "data"
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'segarena.db'}",
                        broker_url=f"sqla+sqlite:///{data / 'broker.db'}", storage_dir=data / "storage",
                        base_image=base_image, heartbeat_timeout_s=60, max_attempts=3)
    settings.ensure_dirs()
    migrate(settings.database_url)
    testset = make_testset(tmp / "testset", n2d=1, n3d=1)
    # the control: one 3D case (a container per case; what it proves is that the next team's run is unaffected)
    control_testset = make_testset(tmp / "control-testset", n2d=0, n3d=1)
    archive = tmp / "image.tar"
    archive.write_bytes(b"placeholder: the hostile images are already on the engine")
    listener = Listener()
    PICKLE_MARKER.unlink(missing_ok=True)
    from tests.run_helpers import ShardedHost

    host = ShardedHost(settings, docker=docker_client)
    ids: dict[str, str] = {}
    try:
        ids = build_hostile_images(docker_client, base_image, [*(kinds or RESILIENCE_KINDS), "correct"],
                                   listener_port=listener.port)
        with session_scope(settings.database_url) as s:
            track_id = seed_track(s, testset=str(testset), slug="hostile", **track).id
            control_track_id = seed_track(s, testset=str(control_testset), slug="hostile-control", **track).id
        dep = sb.deployment_id(host.config)  # the execution host's containers
        scratch = host.work_dir  # its per-case scratch files

        def control(_obs: Observed | None) -> tuple[str, float | None]:
            sub_id, run_id, _ = _run_one(host, track_id=control_track_id, team="team-b-control",
                                         image_id=ids["correct"], archive=archive)
            ctl = Observed("control")
            _observe(settings, sub_id, run_id, ctl)
            from api.db import session_scope as scope
            from api.models import Submission

            with scope(settings.database_url) as s:
                return ctl.sub_state, s.get(Submission, sub_id).dsc

        reference = control(None)
        results: dict[str, Observed] = {"__reference__": Observed("control", control_state=reference[0],
                                                                  control_dsc=reference[1])}
        for kind in kinds or RESILIENCE_KINDS:
            obs = Observed(kind)
            started = time.monotonic()
            try:
                sub_id, run_id, sent = _run_one(host, track_id=track_id, team=f"team-a-{kind}",
                                                image_id=ids[kind], archive=archive)
                obs.sent = list(sent)
                _observe(settings, sub_id, run_id, obs)
            except Exception as exc:
                obs.error = f"{exc.__class__.__name__}: {exc}"
            obs.seconds = time.monotonic() - started
            obs.leftover_containers = [c["Id"][:12] for c in segarena_containers(docker_client, f"{sb.LABEL_DEPLOYMENT}={dep}")]
            obs.leftover_scratch = [str(p) for p in files_under(scratch)]
            obs.orphans = host_processes_with(ORPHAN_MARKER)
            obs.control_state, obs.control_dsc = control(obs)
            results[kind] = obs
        results["__listener__"] = Observed("listener", case_rows=listener.accepted)
        results["__pickle__"] = Observed("pickle", error="marker exists" if PICKLE_MARKER.exists() else "")
        return results
    finally:
        host.close()
        listener.close()
        remove_listener_image(docker_client, ids.get("network"))


def remove_listener_image(docker_client: Any, image_id: str | None) -> None:
    """Remove the ``network`` image built for this run's listener port (its tag names the port: one per run would
    pile up on the engine; its layers are the other behaviours')."""
    if image_id is None:
        return
    try:
        for tag in docker_client.images.get(image_id).tags:
            if "listener_port" in tag:
                docker_client.images.remove(tag, force=True)
    except Exception as exc:  # gone already: nothing to tidy
        print(f"could not remove the listener image {image_id[:19]}: {exc}")


def hostile_row(kind: str, obs: Observed) -> ReportRow:
    spec = BEHAVIOURS[kind]
    observed = ",".join(sorted(set(obs.statuses))) or obs.error or obs.sub_state
    lost = 0 if obs.sub_state in ("succeeded", "failed") and obs.case_rows == obs.cases_total else 1
    reason = next((c["reason"] for c in obs.cases if c["reason"]), "")
    if not reason:
        found = obs.probe_values()[0] if obs.cases else {}
        shown = ", ".join(f"{k}={v}" for k, v in found.items() if len(v) < 40)
        verdict = "contained" if spec.check is None or all(not spec.check(f) for f in obs.probe_values()) else "NOT contained"
        reason = f"{verdict}: {shown}" if shown else spec.what
    return ReportRow(kind=kind, expected="|".join(spec.expected), observed=observed, lost=lost,
                     duplicated=max(0, obs.case_rows - obs.cases_total), note=reason)
