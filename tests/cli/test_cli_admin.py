"""Organizer and participant commands against the real API (in-process uvicorn, embedded settings):
challenge YAML, teams, members and tokens, visibility, baseline/exclude/rerun, export; submit, status,
whoami, cancel. No worker: submissions stay queued (the e2e tests run them)."""

from __future__ import annotations

import csv
import io
import re

import httpx
import pytest

from tests.api_helpers import make_image_tar
from tests.cli_helpers import ThreadServer, run_cli

ORG = "sa_cli_admin_organizer_token"
YAML = """
slug: cli
title: CLI challenge
description: made by segarena admin apply
demo: true  # the built-in tiny set
tracks:
  - slug: main
    kind: main
    testset: tiny
    quota_per_day: 3
    case_timeout_s: 90
  - slug: booster
    kind: booster
    testset: tiny
"""


@pytest.fixture
def server(settings):
    from tests.api_helpers import shared_app

    settings.bootstrap_organizer_token = ORG
    with ThreadServer(shared_app(settings, migrate=True)) as srv:
        yield srv


@pytest.fixture
def env(server, tmp_path):
    return {"SEGARENA_URL": server.url, "SEGARENA_TOKEN": ORG, "SEGARENA_CHALLENGE": "cli",
            "SEGARENA_CONFIG": str(tmp_path / "none.toml"), "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}


def cli(env, *args, ok=True):
    proc = run_cli(*args, env=env)
    if ok:
        assert proc.returncode == 0, f"segarena {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def test_admin_and_participant_commands(server, env, tmp_path):
    spec = tmp_path / "challenge.yaml"
    spec.write_text(YAML)
    assert "created challenge cli (tracks: main, booster)" in cli(env, "admin", "apply", str(spec)).stdout
    track = httpx.get(f"{server.url}/api/challenges/cli/tracks/main").json()
    assert track["quota_per_day"] == 3 and track["case_timeout_s"] == 90
    spec.write_text(YAML.replace("quota_per_day: 3", "quota_per_day: 7"))
    assert "updated challenge cli" in cli(env, "admin", "apply", str(spec)).stdout
    assert httpx.get(f"{server.url}/api/challenges/cli/tracks/main").json()["quota_per_day"] == 7

    team = cli(env, "admin", "team", "create", "Team A", "--affiliation", "Uni").stdout
    team_id = int(re.search(r"team (\d+): Team A", team).group(1))
    added = cli(env, "admin", "team", "add-member", str(team_id), "alice", "--email", "a@example.org").stdout
    member_id = int(re.search(r"member (\d+): alice", added).group(1))
    token = re.search(r"\(shown once, keep it secret\): (\S+)", added).group(1)
    penv = {**env, "SEGARENA_TOKEN": token}
    assert '"name": "alice"' in cli(penv, "whoami").stdout

    # a participant cannot use organizer commands: one clear line
    denied = cli(penv, "admin", "team", "create", "Team B", ok=False)
    assert denied.returncode == 1 and denied.stderr.startswith("error: only organizers may do this")

    archive = tmp_path / "model.tar"
    archive.write_bytes(make_image_tar())
    sub = cli(penv, "submit", str(archive), "--track", "main", "--label", "first").stdout
    sid = int(re.search(r"submission (\d+): queued", sub).group(1))
    listing = " ".join(cli(penv, "status").stdout.split())
    assert f"{sid} main first queued" in listing
    assert '"state": "queued"' in cli(penv, "status", str(sid), "--json").stdout

    assert "baseline=True" in cli(env, "admin", "baseline", str(sid)).stdout
    no_reason = cli(env, "admin", "exclude", str(sid), ok=False)
    assert no_reason.returncode == 1 and "--reason" in no_reason.stderr
    assert "excluded" in cli(env, "admin", "exclude", str(sid), "--reason", "duplicate").stdout
    assert "included" in cli(env, "admin", "exclude", str(sid), "--undo").stdout
    rerun = cli(env, "admin", "rerun", str(sid), ok=False)  # attempt 1 is still queued: refused, one line
    assert rerun.returncode == 1 and rerun.stderr.count("\n") == 1 and "run_active" in rerun.stderr

    for command, value in (("hide", "hidden"), ("freeze", "frozen"), ("publish", "public")):
        assert f"track main: {value}" in cli(env, "admin", command, "main").stdout
        assert httpx.get(f"{server.url}/api/challenges/cli/tracks/main",  # a hidden track: organizers only
                         headers={"Authorization": f"Bearer {ORG}"}).json()["visibility"] == value

    export = cli(env, "admin", "export").stdout
    rows = list(csv.DictReader(io.StringIO(export)))
    assert [int(r["submission_id"]) for r in rows] == [sid]
    out_file = tmp_path / "export.csv"
    assert "wrote" in cli(env, "admin", "export", "-o", str(out_file)).stdout and out_file.read_text() == export

    new = cli(env, "admin", "token", "new", str(member_id), "--label", "laptop").stdout
    token_id, token2 = re.search(r"token (\d+) \(shown once, keep it secret\): (\S+)", new).groups()
    assert '"name": "alice"' in cli({**env, "SEGARENA_TOKEN": token2}, "whoami").stdout
    assert f"token {token_id} revoked" in cli(env, "admin", "token", "revoke", token_id).stdout
    gone = cli({**env, "SEGARENA_TOKEN": token2}, "whoami", ok=False)
    assert gone.returncode == 1 and "unknown or revoked" in gone.stderr

    assert "cancelled" in cli(penv, "cancel", str(sid)).stdout


def test_bad_yaml_is_one_line(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("slug: x\ntracks: [unclosed\n")
    proc = cli(env, "admin", "apply", str(bad), ok=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "not valid YAML" in proc.stderr
    bad.write_text("slug: x\ntitle: y\ntracks:\n  - slug: main\n    cpu: 2\n")
    proc = cli(env, "admin", "apply", str(bad), ok=False)
    assert "unknown fields ['cpu']" in proc.stderr and proc.stderr.count("\n") == 1
