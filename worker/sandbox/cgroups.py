"""CPU time and peak memory of a case container from cgroups (v1, cgroupfs driver): a per-worker cgroup
parent that outlives the container (exact figures), or polling the container's own cgroup (a lower
bound) where the parent cannot be written; and clean-up of dead workers' parents."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from .host import pid_alive


class CgroupMeter:
    """Peak memory and CPU time of one container (see the module docstring)."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, parent: str | None) -> None:
        self.parent = parent.strip("/") if parent else None
        self._cpu0 = 0
        self._pids0 = 0
        self._oom0 = 0
        self._poll_peak: int | None = None
        self._poll_cpu: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pids_hit = False

    @classmethod
    def process_parent(cls) -> str | None:
        """This process's parent (``segarena-<host>-<pid>``, swept by :func:`cleanup_cgroup_parents` once the process
        is gone) when usable here, else None. One per process: the meter resets its peak before each start."""
        return cls.usable_parent(f"{_parent_prefix()}{os.getpid()}")

    @classmethod
    def usable_parent(cls, name: str) -> str | None:
        """``name`` when a cgroup v1 parent can be created and reset here, else None."""
        mem = cls.ROOT / "memory"
        if not (mem / "memory.max_usage_in_bytes").exists() or not os.access(mem, os.W_OK):
            return None
        return name

    def _file(self, controller: str, leaf: str, cid: str | None = None) -> Path:
        parts = [controller, self.parent] if cid is None else [controller, self.parent or "docker", cid]
        return self.ROOT.joinpath(*[p for p in parts if p]) / leaf

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _events(self, controller: str, leaf: str, key: str) -> int:
        try:
            for line in self._file(controller, leaf).read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def before_start(self) -> None:
        """Reset the parent's peak and note its counters (call after create, before start)."""
        if not self.parent:
            return
        try:
            for controller in ("memory", "cpuacct", "pids"):  # the engine creates the rest at start
                (self.ROOT / controller / self.parent).mkdir(exist_ok=True)
            try:
                # cgroup v1 moves a removed container's page cache (e.g. the files earlier cases wrote)
                # to the parent: reclaim it, or it would count toward this case's peak memory
                self._file("memory", "memory.force_empty").write_text("0")
            except OSError:
                pass  # busy (tasks still attached): the peak may include earlier cases' page cache
            self._file("memory", "memory.max_usage_in_bytes").write_text("0")
        except OSError:
            self.parent = None  # cannot reset: fall back to polling
            return
        self._cpu0 = self._read_int(self._file("cpuacct", "cpuacct.usage")) or 0
        self._pids0 = self._events("pids", "pids.events", "max")
        self._oom0 = self._events("memory", "memory.oom_control", "oom_kill")

    def poll(self, cid: str, pids_limit: int) -> None:
        """Poll the container's own cgroup while it runs: memory and CPU (fallback only) and, always,
        whether it reached its pids limit (fork failures are counted in the container's cgroup,
        which vanishes at exit: best effort)."""
        measure = not self.parent

        def loop() -> None:
            mem = self._file("memory", "memory.max_usage_in_bytes", cid)
            cpu = self._file("cpuacct", "cpuacct.usage", cid)
            pids = self._file("pids", "pids.current", cid)
            events = self._file("pids", "pids.events", cid)
            # 50 Hz while this poll is the measurement; 10 Hz when the parent measures exactly (the pids check is a
            # backup then: the parent's pids.events counts every refused fork)
            interval = 0.02 if measure else 0.1
            while not self._stop.wait(interval):
                n = self._read_int(pids)
                if n is not None and n >= pids_limit:
                    self.pids_hit = True
                try:
                    if not self.pids_hit and "max 0" not in events.read_text():
                        self.pids_hit = True
                except OSError:
                    pass
                if not measure:
                    continue
                m, c = self._read_int(mem), self._read_int(cpu)
                if m is not None:
                    self._poll_peak = max(self._poll_peak or 0, m)
                if c is not None:
                    self._poll_cpu = c

        self._thread = threading.Thread(target=loop, name="cgroup-poll", daemon=True)
        self._thread.start()

    def result(self) -> tuple[int | None, float | None, bool, bool]:
        """(peak memory bytes, cpu seconds, pids limit hit, oom kill seen) after the container exited."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if not self.parent:
            cpu = self._poll_cpu / 1e9 if self._poll_cpu is not None else None
            return self._poll_peak, cpu, self.pids_hit, False
        peak = self._read_int(self._file("memory", "memory.max_usage_in_bytes"))
        cpu1 = self._read_int(self._file("cpuacct", "cpuacct.usage"))
        cpu = (cpu1 - self._cpu0) / 1e9 if cpu1 is not None else None
        pids_hit = self.pids_hit or self._events("pids", "pids.events", "max") > self._pids0
        oom = self._events("memory", "memory.oom_control", "oom_kill") > self._oom0
        return peak, cpu, pids_hit, oom


def _parent_prefix() -> str:
    return f"segarena-{socket.gethostname()}-"


def cleanup_cgroup_parents() -> list[str]:
    """Remove the (empty) per-worker cgroup parents of dead workers of this host; returns their names."""
    prefix = _parent_prefix()
    removed: set[str] = set()
    try:
        controllers = [p for p in CgroupMeter.ROOT.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
    for ctl in controllers:
        try:
            parents = [p for p in ctl.iterdir() if p.is_dir() and p.name.startswith(prefix)]
        except OSError:
            continue
        for parent in parents:
            pid = parent.name[len(prefix):]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            try:
                for child in parent.iterdir():
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()
                removed.add(parent.name)
            except OSError:
                pass  # still in use: next time
    return sorted(removed)
