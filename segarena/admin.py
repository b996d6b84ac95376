"""Organizer commands (``segarena admin ...``): challenges and tracks from YAML, teams and tokens,
re-run, exclude, baseline rows, publish/hide/freeze, CSV export. They need an organizer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from segarena.client import CliError
from segarena.dates import when
from segarena.output import write
from segarena.participant import OPTIONS, _print_submission, open_client, out

__all__ = ["app", "load_challenge_yaml", "apply_challenge"]

app = typer.Typer(help="Organizer commands (need an organizer token).", no_args_is_help=True)
team_app = typer.Typer(help="Teams and their members.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(team_app, name="team")
app.add_typer(token_app, name="token")
worker_app = typer.Typer(help="Worker identities of execution hosts (docs/worker-protocol.md).", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

TRACK_FIELDS = {
    "slug", "title", "kind", "description", "testset", "metric_profile", "ranking_scheme", "row_policy", "visibility",
    "opens_at", "closes_at", "quota_per_day", "queue", "cpus", "memory_mb", "gpus", "case_timeout_s",
    "total_timeout_s", "pids_limit", "tmpfs_mb", "allow_root", "repro_margin_dsc", "repro_margin_nsd",
    "prompt", "iterations", "class_budget_s", "timing", "budget_cpu_s", "budget_gpu_s",
}


PARTICIPATION_FIELDS: dict[str, type] = {"signup_open": bool, "terms": str, "max_team_size": int}
PARTICIPATION_HELP = {"signup_open": "true or false", "terms": "text (the terms participants accept)",
                      "max_team_size": "a whole number of members (or null: no limit)"}


def load_challenge_yaml(path: Path) -> dict[str, Any]:
    """Read and check a challenge definition: slug, title, description and a list of tracks."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data.get("slug") or not data.get("title"):
        raise CliError(f"{path}: a challenge needs at least 'slug' and 'title' at the top level")
    tracks = data.get("tracks") or []
    if not isinstance(tracks, list) or not all(isinstance(t, dict) and t.get("slug") for t in tracks):
        raise CliError(f"{path}: 'tracks' must be a list of mappings, each with a 'slug'")
    for t in tracks:
        unknown = set(t) - TRACK_FIELDS
        if unknown:
            raise CliError(f"{path}: track '{t['slug']}' has unknown fields {sorted(unknown)}; "
                           f"allowed: {', '.join(sorted(TRACK_FIELDS))}")
        t.setdefault("title", t["slug"].replace("-", " ").title())
        for k in ("opens_at", "closes_at"):
            if t.get(k) is not None and not isinstance(t[k], str):
                t[k] = t[k].isoformat()
    spec = {"slug": data["slug"], "title": data["title"], "description": data.get("description", ""), "tracks": tracks}
    if "demo" in data:  # a demo challenge may use the built-in sets (public ground truth)
        if not isinstance(data["demo"], bool):
            raise CliError(f"{path}: 'demo' must be true or false")
        spec["demo"] = data["demo"]
    for key, kind in PARTICIPATION_FIELDS.items():  # participants: sign-up, terms, team size (docs/participants.md)
        if key in data:
            value = data[key]
            if (value is not None and not isinstance(value, kind)) or (isinstance(value, bool) and kind is int):
                raise CliError(f"{path}: '{key}' must be {PARTICIPATION_HELP[key]}")
            spec[key] = value.strip() if isinstance(value, str) else value
    return spec


def apply_challenge(client, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Create the challenge, or update the tracks of an existing one; returns (challenge, what happened)."""
    try:
        existing = client.get(f"/api/challenges/{spec['slug']}")
    except CliError as exc:
        if exc.status != 404:
            raise
        existing = None
    if existing is None:
        return client.post("/api/challenges", json=spec), "created"
    participation = {k: spec[k] for k in PARTICIPATION_FIELDS if k in spec}
    if participation:
        client.patch(f"/api/challenges/{spec['slug']}/participation", json=participation)
    have = {t.get("slug") for t in existing.get("tracks", [])}
    for t in spec["tracks"]:
        if t["slug"] in have:
            fields = {k: v for k, v in t.items() if k != "slug"}
            client.patch(f"/api/challenges/{spec['slug']}/tracks/{t['slug']}", json=fields)
        else:
            raise CliError(f"challenge '{spec['slug']}' exists and has no track '{t['slug']}'; adding tracks to an "
                           "existing challenge is not supported by the API: create a new challenge")
    return client.get(f"/api/challenges/{spec['slug']}"), "updated"


@app.command("apply")
def apply(path: Path = typer.Argument(..., help="Challenge YAML: slug, title, description, tracks: [...]")) -> None:
    """Create a challenge and its tracks from a YAML file (or update the tracks of an existing one)."""
    spec = load_challenge_yaml(path)
    with open_client() as client:
        challenge, what = apply_challenge(client, spec)
    tracks = ", ".join(t.get("slug", "?") for t in challenge.get("tracks", []))
    out.print(f"{what} challenge {challenge.get('slug')} (tracks: {tracks})")


@app.command("visibility")
def visibility(track: str = typer.Argument(..., help="Track slug."),
               value: str = typer.Argument(..., help="public, hidden or frozen.")) -> None:
    """Publish, hide or freeze a track's leaderboard."""
    with open_client() as client:
        res = client.post(client.track_path(track) + "/visibility", json={"visibility": value})
    out.print(f"track {track}: {res.get('visibility', value) if isinstance(res, dict) else value}")


@app.command("publish")
def publish(track: str = typer.Argument(..., help="Track slug.")) -> None:
    """Make a track's leaderboard public."""
    visibility(track, "public")


@app.command("freeze")
def freeze(track: str = typer.Argument(..., help="Track slug.")) -> None:
    """Freeze a track's leaderboard (public, no further changes)."""
    visibility(track, "frozen")


@app.command("hide")
def hide(track: str = typer.Argument(..., help="Track slug.")) -> None:
    """Hide a track's leaderboard from the public."""
    visibility(track, "hidden")


@app.command("rerun")
def rerun(submission_id: int = typer.Argument(...)) -> None:
    """Run a submission again as a new attempt."""
    with open_client() as client:
        res = client.post(f"/api/admin/submissions/{submission_id}/rerun")
    _print_submission(res if isinstance(res, dict) else {"id": submission_id, "state": "queued"})


def _plan_table(items: list[dict[str, Any]], *, title: str, skipped: bool = False) -> Any:
    from rich.table import Table

    cols = ["submission", "team", "label", "state", "attempt", "DSC"] + (["why skipped"] if skipped else ["new attempt"])
    table = Table(*cols, title=title, box=None)
    for p in items:
        dsc = "-" if p.get("dsc") is None else f"{p['dsc']:.4f}"
        last = p.get("reason") or "" if skipped else (str(p["new_attempt"]) if p.get("new_attempt")
                                                       else f"{int(p.get('attempt') or 0) + 1} (planned)")
        table.add_row(str(p["submission_id"]), str(p.get("team")), p.get("label") or "", str(p.get("state")),
                      str(p.get("attempt")), dsc, last)
    return table


@app.command("rerun-track")
def rerun_track(track: str = typer.Argument(..., help="Track slug."),
                which: str = typer.Option("latest", "--which", help="latest (each team's newest submission that was "
                                          "not cancelled) or best (each team's best-scoring succeeded one)."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would run."),
                yes: bool = typer.Option(False, "--yes", "-y", help="Queue without asking.")) -> None:
    """Re-run every team's latest or best submission of a track as new attempts (e.g. after a test-set change).

    Lists the plan first (dry run), asks, then queues exactly the listed submissions (the server refuses if the
    plan changed in between)."""
    if which not in ("latest", "best"):
        raise CliError(f"--which: {which!r} is not latest or best")
    with open_client() as client:
        path = client.track_path(track) + "/rerun"
        plan = client.post(path, json={"which": which, "dry_run": True})
        ids = [p["submission_id"] for p in plan["queued"]]
        out.print(_plan_table(plan["queued"], title=f"track {track}: {len(ids)} submission(s) to re-run ({which})"))
        if plan["skipped"]:
            out.print(_plan_table(plan["skipped"], title=f"{len(plan['skipped'])} skipped", skipped=True))
        if dry_run:
            out.print("dry run: nothing queued")
            return
        if not ids:
            out.print("nothing to re-run")
            return
        if not yes and not typer.confirm(f"Queue {len(ids)} new attempt(s) on track {track}?", default=False):
            out.print("nothing queued")
            raise typer.Exit(1)
        done = client.post(path, json={"which": which, "dry_run": False, "confirm": ids})
    out.print(_plan_table(done["queued"], title=f"queued {len(done['queued'])} new attempt(s)"))
    if done["skipped"]:
        out.print(_plan_table(done["skipped"], title=f"{len(done['skipped'])} skipped", skipped=True))
    notes = {p["note"] for p in done["queued"] if p.get("note")}
    for note in notes:
        out.print(note)


@app.command("usage")
def usage(track: str | None = typer.Argument(None, help="Track slug; without it, every track of the challenge."),
          as_json: bool = typer.Option(False, "--json", help="Print the API's JSON.")) -> None:
    """Compute used per team and track: container CPU-, GPU- and wall-seconds, budgets and warnings."""
    from rich.table import Table

    with open_client() as client:
        if track:
            rows = client.get(client.track_path(track) + "/usage")
        else:
            rows = client.get("/api/admin/usage", params={"challenge": client.config.challenge})
    if as_json:
        out.print_json(data=rows)
        return
    table = Table("track", "team", "CPU-s", "GPU-s", "wall-s", "cases", "CPU budget %", "GPU budget %",
                  "re-runs CPU-s", "warnings", box=None)
    for r in rows:
        pct = {res: ("-" if r.get(f"{res}_percent") is None else f"{r[f'{res}_percent']:.1f}") for res in ("cpu", "gpu")}
        warned = ", ".join(f"{w['resource']} {w['level']} %" for w in r.get("warnings") or [])
        table.add_row(str(r["track"]), str(r["team"]), f"{r['cpu_s']:.1f}", f"{r['gpu_s']:.1f}", f"{r['wall_s']:.1f}",
                      str(r["cases"]), pct["cpu"], pct["gpu"], f"{r['rerun_cpu_s']:.1f}", warned or "-")
    out.print(table if rows else "no compute used yet")


@app.command("exclude")
def exclude(submission_id: int = typer.Argument(...),
            reason: str = typer.Option("", "--reason", "-r", help="Why (shown to the team)."),
            undo: bool = typer.Option(False, "--undo", help="Include it again.")) -> None:
    """Exclude a submission from the leaderboard (or include it again with --undo)."""
    if not undo and not reason:
        raise CliError("say why with --reason; the team sees it")
    with open_client() as client:
        res = client.post(f"/api/admin/submissions/{submission_id}/exclude", json={"excluded": not undo, "reason": reason})
    out.print(f"submission {submission_id}: {'excluded' if (res or {}).get('excluded', not undo) else 'included'}")


@app.command("baseline")
def baseline(submission_id: int = typer.Argument(...),
             undo: bool = typer.Option(False, "--undo", help="Unmark it.")) -> None:
    """Mark a submission as a baseline row of the leaderboard."""
    with open_client() as client:
        res = client.post(f"/api/admin/submissions/{submission_id}/baseline", json={"is_baseline": not undo})
    out.print(f"submission {submission_id}: baseline={(res or {}).get('is_baseline', not undo)}")


@app.command("show")
def show(submission_id: int = typer.Argument(...)) -> None:
    """Everything about a submission (organizer view)."""
    with open_client() as client:
        out.print_json(data=client.get(f"/api/admin/submissions/{submission_id}"))


@app.command("export")
def export(output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
    """Every submission with every column, as CSV."""
    with open_client() as client:
        text = client.get("/api/admin/export.csv", expect_json=False)
    if output:
        output.write_text(text)
        out.print(f"wrote {output} ({text.count(chr(10))} lines)")
    else:
        write(text)


@app.command("report")
def report(track: str = typer.Argument(..., help="Track slug."),
           output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML file to write."),
           n_boot: int = typer.Option(1000, "--bootstrap", help="Bootstrap samples for ranking stability (≥ 1000)."),
           alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the Wilcoxon tests (Holm)."),
           seed: int = typer.Option(0, "--seed", help="Seed of the case bootstrap."),
           json_out: Path | None = typer.Option(None, "--json", help="Also write the report's data (JSON) here.")) -> None:
    """The challenge report of a track as one offline HTML file (print it to PDF from the browser): ranking with its
    scheme, bootstrap stability (blob plot), significance maps, per-modality and per-size tables, runtime and memory,
    failures by reason, submissions over time and the test set (docs/report.md)."""
    import json
    import time

    from segarena.report_html import render_report

    t0 = time.perf_counter()
    with open_client(timeout=600.0) as client:
        data = client.get(client.track_path(track).replace("/api/challenges/", "/api/admin/challenges/", 1)
                          + "/report.json", params={"n_boot": n_boot, "alpha": alpha, "seed": seed})
    html = render_report(data)
    output.write_text(html, encoding="utf-8")
    if json_out is not None:
        json_out.write_text(json.dumps(data, indent=1), encoding="utf-8")
    out.print(f"wrote {output} ({len(html) // 1024} KiB; {len(data['ranking'])} rows, {data['n_cases']} cases; "
              f"built in {data.get('build_s', 0):.1f} s on the server, {time.perf_counter() - t0:.1f} s in all)")


@team_app.command("create")
def team_create(name: str = typer.Argument(...), affiliation: str = typer.Option("", help="Institution.")) -> None:
    """Create a team."""
    with open_client() as client:
        team = client.post("/api/teams", json={"name": name, "affiliation": affiliation})
    out.print(f"team {team.get('id')}: {team.get('name')}")


@team_app.command("add-member")
def team_add_member(team_id: int = typer.Argument(...), name: str = typer.Argument(...),
                    email: str = typer.Option("", help="Contact address."),
                    role: str = typer.Option("participant", help="participant or organizer.")) -> None:
    """Add a member to a team and print their API token (shown once)."""
    with open_client() as client:
        res = client.post(f"/api/teams/{team_id}/members", json={"name": name, "email": email, "role": role})
    member = res.get("member", res)
    out.print(f"member {member.get('id')}: {member.get('name')} ({member.get('role', role)})")
    _print_token(res)


def _print_token(res: dict[str, Any]) -> None:
    token = res.get("token")
    if isinstance(token, dict):
        token = token.get("token") or token.get("value")
    if token:
        tid = res.get("token_id", res.get("id"))
        out.print(f"token{f' {tid}' if tid is not None else ''} (shown once, keep it secret): {token}")


@token_app.command("new")
def token_new(member_id: int = typer.Argument(...), label: str = typer.Option("", help="What it is for.")) -> None:
    """Issue a new API token for a member (shown once)."""
    with open_client() as client:
        res = client.post(f"/api/members/{member_id}/tokens", json={"label": label} if label else None)
    _print_token(res if isinstance(res, dict) else {})


@token_app.command("list")
def token_list(member_id: int = typer.Argument(..., help="A member id.")) -> None:
    """List a member's API tokens: id, prefix, label, created, last used, revoked, parent."""
    from rich.table import Table

    with open_client() as client:
        rows = client.get(f"/api/admin/members/{member_id}/tokens")
    table = Table("id", "prefix", "label", "created", "last used", "revoked", "parent", box=None)
    for t in rows if isinstance(rows, list) else []:
        table.add_row(str(t.get("id")), f"{t.get('prefix', '')}…", str(t.get("label") or ""),
                      when(t.get("created_at")), when(t.get("last_used_at"), empty="never"),
                      when(t.get("revoked_at"), empty="active"), str(t.get("parent_id") or ""))
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int = typer.Argument(...)) -> None:
    """Revoke an API token, the tokens it minted and its page sign-ins."""
    with open_client() as client:
        res = client.post(f"/api/admin/tokens/{token_id}/revoke")
    also = (res or {}).get("also_revoked") or [] if isinstance(res, dict) else []
    out.print(f"token {token_id} revoked" + (f" (and the tokens it minted: {', '.join(map(str, also))})" if also else ""))


@worker_app.command("create")
def worker_create(name: str = typer.Argument(..., help="A name for the execution host(s), e.g. gpu-box-1."),
                  queue: list[str] = typer.Option(..., "--queue", "-q", help="A declared queue it may serve "
                                                  "(repeat for several).")) -> None:
    """Create a worker identity and print its token (shown once): the execution host's SEGARENA_WORKER_TOKEN."""
    with open_client() as client:
        res = client.post("/api/admin/workers", json={"name": name, "queues": list(queue)})
    out.print(f"worker {res.get('id')}: {res.get('name')} (queues: {', '.join(res.get('queues') or [])})")
    out.print(f"token (shown once, keep it secret): {res.get('token')}")


@worker_app.command("list")
def worker_list() -> None:
    """List worker identities and their hosts: queues, last seen, calibration, cases run."""
    from rich.table import Table

    with open_client() as client:
        rows = client.get("/api/admin/workers")
    table = Table("id", "name", "queues", "state", "host", "cpu / gpu", "calibration", "last seen", "cases", box=None)
    for w in rows if isinstance(rows, list) else []:
        state = "revoked" if w.get("revoked") else "active"
        nodes = w.get("nodes") or [{}]
        for n in nodes:
            cal = n.get("calibration_s")
            table.add_row(str(w.get("id")), str(w.get("name")), ",".join(w.get("queues") or []), state,
                          str(n.get("host") or n.get("name") or "-"),
                          " / ".join(x for x in (n.get("cpu_model"), n.get("gpu_model")) if x) or "-",
                          f"{cal:.3f} s" if isinstance(cal, (int, float)) else "-",
                          when(n.get("last_seen_at"), empty="never"), str(n.get("cases_run", 0) if n else 0))
    out.print(table)


@worker_app.command("revoke")
def worker_revoke(name: str = typer.Argument(...)) -> None:
    """Revoke a worker identity: every token of it stops working at once."""
    with open_client() as client:
        client.post(f"/api/admin/workers/{name}/revoke")
    out.print(f"worker {name} revoked")


_ = OPTIONS  # the root callback's --url/--token/--challenge apply here too
