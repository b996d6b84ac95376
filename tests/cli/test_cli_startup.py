"""`segarena --help` and the participant commands start without the platform's heavy libraries.

Checked on what a fresh process imports (``sys.modules`` after running the command in a subprocess), not on
wall-clock time: the root's help must list every command (the lazy ones from their one-line help) while importing
none of the server, worker or numeric stacks. Measured start time: see bench/ and the issue's report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("fastapi", "starlette", "sqlalchemy", "celery", "kombu", "docker", "numpy", "pandas", "scipy", "boto3",
         "httpx", "uvicorn", "api", "worker", "server", "leaderboard", "leaderboard_web", "evaluator", "data_manifests",
         "click")  # click: typer vendors its own (typer._click); the base install (segarena[client]) has no click

_PROBE = r"""
import json, sys
sys.argv = ["segarena", *json.loads(sys.argv[1])]
from segarena.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv_heavy)))
print("\n" + json.dumps({"code": code, "heavy": heavy}))
"""


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[dict, str]:
    probe = _PROBE.replace("sys.argv_heavy", repr(json.dumps(HEAVY)))
    proc = subprocess.run([sys.executable, "-c", probe, json.dumps(list(args))], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": "/nonexistent",
                                            **(env or {})}, check=False)
    assert proc.stdout.strip(), proc.stderr
    *text, last = proc.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(text)


def test_root_help_lists_every_command_and_imports_nothing_heavy():
    result, text = _run("--help")
    assert result["code"] in (0, None), text
    assert result["heavy"] == [], f"`segarena --help` imported {result['heavy']}; import them inside the commands"
    for command in ("configure", "submit", "status", "logs", "results", "leaderboard", "cancel", "whoami", "check",
                    "serve", "worker", "scorer", "demo", "admin", "score", "testset"):
        assert f"\n  {command} " in text, (command, text)


@pytest.mark.parametrize("command", ["configure", "submit", "status", "logs", "results", "leaderboard", "cancel",
                                     "whoami"])
def test_participant_command_help_imports_nothing_heavy(command):
    result, text = _run(command, "--help")
    assert result["code"] in (0, None), text
    assert result["heavy"] == [], f"`segarena {command} --help` imported {result['heavy']}"


@pytest.mark.parametrize(("args", "expected"), [(("score", "--help"), "--pred"), (("testset", "--help"), "generate")])
def test_lazy_commands_load_when_asked(args, expected):
    result, text = _run(*args)
    assert result["code"] in (0, None), text
    assert expected in text, text


def test_a_participant_command_that_runs_imports_no_server_code(tmp_path):
    """Really run: `segarena status` against an address where nothing listens fails cleanly, having loaded only the
    client (httpx) and none of the server, worker or numeric code."""
    result, text = _run("status", env={"SEGARENA_URL": "http://127.0.0.1:9", "SEGARENA_TOKEN": "sa_x",
                                       "SEGARENA_CONFIG": str(tmp_path / "none.toml")})
    assert result["code"] not in (0, None), text
    # httpx imports click for its own command line when click happens to be installed (it falls back without it)
    assert set(result["heavy"]) <= {"httpx", "click"}, f"`segarena status` imported {result['heavy']}"
    assert "httpx" in result["heavy"], "the probe did not see the command run"


def test_the_api_server_starts_without_scipy_ndimage_or_the_generator():
    """The API and its pages use the evaluator's aggregation and the test-set schema, never the surface distances,
    the click simulation or the synthetic generator: ``scipy.ndimage`` (~0.15 s of CPU at import) and
    ``data_manifests.generator`` load on first use, in the scorer, not at every start of an API process."""
    probe = ("import sys, server.app; server.app.create_app(); "
             "print(sorted(m for m in ('scipy.ndimage', 'data_manifests.generator') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
