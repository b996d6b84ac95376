"""The ``segarena`` command as installed, in real processes (most CLI tests run it in-process through
tests/cli_helpers.run_cli): the console script starts, lists its commands, and a participant command talks to a
real server and exits with the documented status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import ThreadServer, run_cli


def _console_script() -> str:
    script = Path(sys.executable).with_name("segarena")
    return str(script) if script.exists() else (shutil.which("segarena") or "")


def test_console_script_starts_and_lists_its_commands():
    script = _console_script()
    assert script, "the segarena console script is not installed next to this Python (pip install -e .)"
    proc = subprocess.run([script, "--help"], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    for command in ("submit", "status", "leaderboard", "check", "admin", "serve", "worker", "scorer", "testset"):
        assert command in proc.stdout, (command, proc.stdout)


def test_participant_command_in_a_subprocess_against_a_real_server(settings):
    from tests.api_helpers import shared_app

    with ThreadServer(shared_app(settings, migrate=True)) as server:
        env = {"SEGARENA_URL": server.url, "SEGARENA_TOKEN": "sa_not_a_real_token", "SEGARENA_CHALLENGE": "nope",
               "SEGARENA_CONFIG": str(settings.data_dir / "no-config.toml")}
        sub = run_cli("status", env=env, subprocess_=True)
        inproc = run_cli("status", env=env)
    assert sub.returncode != 0 and sub.returncode == inproc.returncode, (sub, inproc)
    assert sub.stderr.startswith("error: ") and "Traceback" not in sub.stderr, sub.stderr
    assert sub.stderr == inproc.stderr and sub.stdout == inproc.stdout
