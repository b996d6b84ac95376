"""Joining a challenge from the command line, against the real API (in-process uvicorn, embedded settings): the
challenge YAML's terms and team-size limit, `segarena signup request|claim|join-code`, `segarena admin signups
list|approve|refuse`, `segarena accept-terms`, then a submission; dates in ISO 8601 with the offset."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from segarena.dates import when
from tests.api_helpers import make_image_tar
from tests.cli_helpers import ThreadServer, run_cli

ORG = "sa_cli_signup_organizer_token"
YAML = """
slug: joinme
title: Join me
demo: true
max_team_size: 2
terms: |
  Use no external test data.
  Publish a method description.
tracks:
  - slug: main
    testset: tiny
"""
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


@pytest.fixture
def server(settings):
    from tests.api_helpers import shared_app

    settings.bootstrap_organizer_token = ORG
    with ThreadServer(shared_app(settings, migrate=True)) as srv:
        yield srv


def cli(env, *args, ok=True):
    proc = run_cli(*args, env=env)
    if ok:
        assert proc.returncode == 0, f"segarena {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def test_signup_from_the_command_line(server, tmp_path):
    org = {"SEGARENA_URL": server.url, "SEGARENA_TOKEN": ORG, "SEGARENA_CHALLENGE": "joinme",
           "SEGARENA_CONFIG": str(tmp_path / "org.toml"), "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
    anon = {**org, "SEGARENA_TOKEN": "", "SEGARENA_CONFIG": str(tmp_path / "new.toml")}
    spec = tmp_path / "c.yaml"
    spec.write_text(YAML)
    cli(org, "admin", "apply", str(spec))

    out = cli(anon, "signup", "request", "--name", "Una", "--email", "una@example.org", "--team", "Una Lab").stdout
    code = re.search(r"claim code \(shown only now, keep it secret\): (sac_\S+)", out).group(1)
    assert f"/signup/claim#code={code}" in out
    pending = cli(anon, "signup", "claim", code)
    assert pending.stdout.startswith("pending:")

    listed = cli(org, "admin", "signups", "list").stdout
    assert "Una" in listed and "una@example.org" in listed and "Una Lab (new)" in listed
    assert re.search(ISO, listed)  # the request time, ISO 8601 with the offset
    sid = re.search(r"^\s*(\d+)\s+joinme\s+pending", listed, re.M).group(1)
    approved = cli(org, "admin", "signups", "approve", sid).stdout
    member_id = re.search(r"approved: member (\d+)", approved).group(1)
    assert f"segarena admin token new {member_id}" in approved and re.search(ISO, approved)

    # the claim prints the token once, --save stores it in the config file
    got = cli(anon, "signup", "claim", code, "--save").stdout
    assert "token saved to" in got and "sa_" not in got
    again = cli(anon, "signup", "claim", code, ok=False)
    assert again.returncode == 1 and "already claimed" in again.stderr

    # the join code lets a second member in; the limit (2) refuses a third
    jc = re.search(r"join code (\S+)", cli(anon, "signup", "join-code").stdout).group(1)
    out = cli(anon, "signup", "request", "--name", "Vic", "--email", "vic@example.org", "--join-code", jc).stdout
    code2 = re.search(r"(sac_\S+)", out).group(1)
    out = cli(anon, "signup", "request", "--name", "Wes", "--email", "wes@example.org", "--join-code", jc).stdout
    sid2 = int(re.search(r"sign-up request (\d+)", out).group(1))
    cli(org, "admin", "signups", "approve", str(sid2 - 1))
    full = cli(org, "admin", "signups", "approve", str(sid2), ok=False)
    assert full.returncode == 1 and "allows at most 2 per team (max_team_size)" in full.stderr
    cli(org, "admin", "signups", "refuse", str(sid2), "--reason", "team Una Lab is full")
    assert "refused" in cli(org, "admin", "signups", "list", "--state", "refused").stdout
    vic = cli(anon, "signup", "claim", code2).stdout
    assert re.search(r"token \(shown only now, keep it secret\): sa_", vic)

    # terms: the submission is refused until accepted
    archive = tmp_path / "m.tar"
    archive.write_bytes(make_image_tar(salt="cli-signup"))
    refused = cli(anon, "submit", str(archive), ok=False)
    assert refused.returncode != 0 and "segarena accept-terms" in refused.stderr
    no = run_cli("accept-terms", env=anon)  # answers nothing: not accepted
    assert no.returncode != 0 and "Use no external test data." in no.stdout
    yes = cli(anon, "accept-terms", "--yes").stdout
    assert "you accepted the terms of 'joinme'" in yes and re.search(ISO, yes)
    assert "you accepted the terms of joinme on" in cli(anon, "accept-terms").stdout
    sub = cli(anon, "submit", str(archive)).stdout
    assert re.search(r"submission \d+: queued", sub)
    assert re.search(ISO, cli(anon, "status").stdout)
    q = cli(anon, "quota").stdout
    row = re.search(r"joinme\s+main\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)", q)
    assert row and row.groups()[:4] == ("5", "1", "0", "4") and re.fullmatch(ISO, row.group(5)), q


def test_dates_are_iso_8601_with_offset(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert when("2026-11-30T20:15:04.5Z") == "2026-12-01T01:45:04+05:30"
        assert when("2026-11-30T20:15:04+00:00") == "2026-12-01T01:45:04+05:30"
        assert when(datetime(2026, 11, 30, 20, 15, 4)) == "2026-12-01T01:45:04+05:30"  # noqa: DTZ001 (naive means UTC)
        assert when(None) == "" and when("", empty="never") == "never" and when("soon") == "soon"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
