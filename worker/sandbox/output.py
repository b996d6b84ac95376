"""What a case container leaves behind: its logs (head and tail of each stream, read live from the
attach socket), the bounded output directory (watched while it runs), the facts about its prediction
file (:func:`observe_output`, fed to the pure verdict) and the prediction check (:func:`check_output`)."""

from __future__ import annotations

import collections
import os
import stat
import threading
from pathlib import Path
from typing import Any

from .profile import CaseRun, human_bytes


class OutputWatch:
    """Kills the container when what it writes to outputs/ grows past a limit, so an image cannot fill
    the worker's disk (or its inodes) through the one writable host directory. Three bounds: the disk
    bytes used (blocks), the apparent size (a sparse file costs no blocks but still breaks whoever
    reads it) and the number of entries (files of any kind, directories included). It polls 10 times
    a second (a fast writer can overshoot by what it writes in 0.1 s before it is stopped), and
    :meth:`final_check` looks once more after the container exited, so a writer that exits between two
    polls is caught too."""

    #: most entries a post-exit count walks before it reports "more than" (bounds the walk itself)
    COUNT_CAP = 100_000

    def __init__(self, api: Any, container_id: str, out_dir: Path, limit: int, interval: float = 0.1, *,
                 max_files: int = 16, max_apparent: int | None = None) -> None:
        self.api, self.container_id, self.out_dir, self.limit, self.interval = api, container_id, out_dir, limit, interval
        self.max_files = max_files
        self.max_apparent = limit if max_apparent is None else max_apparent
        self.exceeded = False
        self.killed = False  # stopped by the watch while running (else: found after it exited)
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="case-output-watch", daemon=True)

    def _measure(self, cap: int) -> tuple[int, int, int, bool]:
        """(entries, disk bytes, apparent bytes, walk cut at ``cap`` entries) of outputs/, never following links."""
        entries = used = apparent = 0
        stack = [str(self.out_dir)]
        while stack:
            try:
                it = os.scandir(stack.pop())
            except OSError:
                continue
            with it:
                for entry in it:
                    entries += 1
                    if entries > cap:
                        return entries, used, apparent, True
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    used += st.st_blocks * 512
                    if stat.S_ISREG(st.st_mode):
                        apparent += st.st_size
                    elif stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        return entries, used, apparent, False

    def _size(self) -> int:
        return self._measure(self.COUNT_CAP)[1]

    def _check(self, cap: int) -> bool:
        entries, used, apparent, cut = self._measure(cap)
        if entries > self.max_files:
            count = f"more than {cap}" if cut else str(entries)
            self.reason = f"output limit: {count} files in outputs/ (limit {self.max_files})"
        elif used > self.limit:
            self.reason = (f"output limit: the container wrote more than {human_bytes(self.limit)} to outputs/ "
                           f"({human_bytes(used)} seen)")
        elif apparent > self.max_apparent:
            self.reason = (f"output limit: {human_bytes(apparent)} apparent (sparse) size in outputs/ "
                           f"(limit {human_bytes(self.max_apparent)})")
        else:
            return False
        self.exceeded = True
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # the walk stops just past the file limit: a flood of entries costs the watch nothing more
            if self._check(self.max_files):
                self.killed = True
                try:
                    self.api.kill(self.container_id)
                except Exception:
                    pass
                return

    def final_check(self) -> bool:
        """Measure once more after the container exited (exact count up to :attr:`COUNT_CAP`)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.exceeded:
            first = self.reason
            if not self._check(self.COUNT_CAP):  # the exact figures for the reason, when still there
                self.reason = first
            self.exceeded = True
            return True
        return self._check(self.COUNT_CAP)

    def __enter__(self) -> OutputWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class BoundedLog:
    """Keeps the first and last ``keep`` bytes of a stream and counts the rest."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_bytes = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_bytes += len(chunk)
        while self.tail and self.tail_bytes - len(self.tail[0]) >= self.keep:
            self.tail_bytes -= len(self.tail.popleft())

    def texts(self) -> tuple[str, str]:
        tail = b"".join(self.tail)[-self.keep:] if self.tail else b""
        return bytes(self.head).decode("utf-8", "replace"), tail.decode("utf-8", "replace")


def pump_logs(sock: Any, out: BoundedLog, err: BoundedLog) -> None:
    from docker.utils.socket import frames_iter

    try:
        for stream_id, data in frames_iter(sock, False):
            (err if stream_id == 2 else out).feed(data)
    except Exception:
        pass


def close_attach(sock: Any) -> None:
    """Close an attach socket and the HTTP response under it (no ResourceWarning)."""
    raw = getattr(sock, "_sock", None)
    resp = getattr(sock, "_response", None)
    for closer in (getattr(resp, "close", None), sock.close, getattr(raw, "close", None)):
        if closer is not None:
            try:
                closer()
            except Exception:
                pass


_OutputWatch, _BoundedLog, _pump, _close_attach = OutputWatch, BoundedLog, pump_logs, close_attach


def observe_output(out_dir: Path, name: str) -> tuple[str, int, tuple[str, ...]]:
    """(kind, size, listing) of the prediction ``out_dir/name`` after the container exited: kind is
    ``missing``, ``file`` (a regular file; size its bytes) or ``other`` (a link, a directory, ...);
    listing is the first five names in ``out_dir`` when the file is missing (for the reason)."""
    try:
        st = os.lstat(out_dir / name)
    except OSError:
        try:
            listing = tuple(sorted(p.name for p in out_dir.iterdir())[:5])
        except OSError:
            listing = ()
        return "missing", 0, listing
    if not stat.S_ISREG(st.st_mode):
        return "other", 0, ()
    return "file", st.st_size, ()


def check_output(case_run: CaseRun, *, expected_shape: tuple[int, ...], max_bytes: int | None = None,
                 profile: str | None = None) -> Any:
    """Load and validate the prediction of an ``ok`` case; returns ``segs`` or None.

    On a bad prediction the case becomes ``invalid_output`` with the loader's message. ``profile``: the run's
    metric profile (the shard spec's ``metric_profile``): under ``cvpr24`` / ``cvpr25`` float and negative ``segs``
    pass, as the references scored them; ``default`` (or None) refuses them.
    """
    from evaluator.io import CaseFormatError, load_prediction

    if case_run.status != "ok" or case_run.output_path is None:
        return None
    try:
        if max_bytes is None:
            return load_prediction(case_run.output_path, expected_shape=tuple(expected_shape), profile=profile)
        return load_prediction(case_run.output_path, expected_shape=tuple(expected_shape), max_bytes=max_bytes,
                               profile=profile)
    except CaseFormatError as exc:
        case_run.status = "invalid_output"
        case_run.reason = f"invalid prediction: {exc}"
        return None
