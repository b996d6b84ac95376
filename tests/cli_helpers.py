"""Helpers of the CLI and end-to-end tests: the CLI run in-process (or in a subprocess), a TCP proxy that can drop a
connection mid-transfer; servers, ports and waiting come from tests/servers.py and tests/waiting.py."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.servers import ThreadServer, free_port  # noqa: F401 (re-exported: the one server helper)
from tests.waiting import wait_http  # noqa: F401 (re-exported: the one waiting helper)

ROOT = Path(__file__).resolve().parents[1]


class DroppingProxy:
    """A TCP proxy to ``upstream``; ``drop_after(n)`` cuts the next connection once it has forwarded
    ``n`` bytes from the client (a dropped Wi-Fi in the middle of an upload), then works normally."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._drop_at: int | None = None
        self._lock = threading.Lock()
        self.drops = 0
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_after(self, n: int) -> None:
        with self._lock:
            self._drop_at = n

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()  # wake accept()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                budget, self._drop_at = self._drop_at, None
            state = {"left": budget}
            threading.Thread(target=self._pump, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if state is not None and state["left"] is not None:
                    if len(data) >= state["left"]:
                        dst.sendall(data[: state["left"]])
                        self.drops += 1
                        # reset both sides: the client sees its connection die mid-request
                        for s in (src, dst):
                            with contextlib.suppress(OSError):
                                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)  # wakes the other direction's blocked recv
                            with contextlib.suppress(OSError):
                                s.close()
                        return
                    state["left"] -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()


def segarena_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "segarena.cli", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False,
            cwd: Path | None = None, subprocess_: bool = False) -> subprocess.CompletedProcess:
    """Run the ``segarena`` command line as a user would and capture its output and exit status.

    In-process by default (``segarena.cli.main`` with this environment, working directory and argv, its stdout and
    stderr captured): the same code path without a 1-3 s interpreter start per call. ``subprocess_=True`` runs
    ``python -m segarena.cli`` in a real process instead (tests/cli/test_cli_smoke.py keeps that path honest);
    ``timeout`` applies to the subprocess only."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    if subprocess_:
        proc = subprocess.run(segarena_cmd(*args), check=False, env=full_env, capture_output=True, text=True, timeout=timeout,
                              cwd=cwd or ROOT)
    else:
        proc = _run_cli_in_process(list(args), full_env, cwd or ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"segarena {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


_cli_lock = threading.Lock()


def _run_cli_in_process(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from segarena.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _cli_lock:  # the environment, argv and working directory are the process's: one command at a time
        saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["segarena", *args]
        os.chdir(cwd)
        _clear_settings_cache()
        code: int | str | None = 0
        try:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    main()
                except SystemExit as exc:
                    code = exc.code
        finally:
            os.chdir(saved_cwd)
            sys.argv = saved_argv
            os.environ.clear()
            os.environ.update(saved_env)
            _clear_settings_cache()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed to stderr, status 1
        err.write(f"{code}\n")
        code = 1
    return subprocess.CompletedProcess(["segarena", *args], code, out.getvalue(), err.getvalue())


def _clear_settings_cache() -> None:
    try:
        from api.settings import get_settings
    except ImportError:  # the client-only install
        return
    get_settings.cache_clear()
