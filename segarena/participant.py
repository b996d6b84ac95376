"""Participant commands: submit (resumable, with a progress bar), status (--watch), logs, results,
leaderboard, configure. Registered on the top-level ``segarena`` app by :mod:`segarena.cli`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from segarena.client import CliError, SegArenaClient, config_path, load_config, save_config
from segarena.dates import now, when
from segarena.output import SafeConsole, write
from segarena.upload import DEFAULT_CHUNK_BYTES, upload_archive

__all__ = ["register", "open_client", "progress_of", "FINAL"]

FINAL = {"succeeded", "failed", "cancelled"}
out = SafeConsole(highlight=False, soft_wrap=True)  # every participant-supplied text is cleaned of terminal control
err = SafeConsole(stderr=True, highlight=False)

# global options set by the root callback (see segarena.cli)
OPTIONS: dict[str, str | None] = {"url": None, "token": None, "challenge": None}


def open_client(*, need_token: bool = True, timeout: float = 60.0) -> SegArenaClient:
    """A client from the effective configuration; without a token where one is needed, one clear error."""
    cfg = load_config(**OPTIONS)
    if need_token and not cfg.token:
        raise CliError("no API token: set SEGARENA_TOKEN, pass --token, or run 'segarena configure --token TOKEN'")
    return SegArenaClient(cfg, timeout=timeout)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def progress_of(sub: dict[str, Any]) -> tuple[int, int]:
    """(cases done, cases total) from a submission's JSON, whatever shape its progress takes."""
    p = sub.get("progress")
    if isinstance(p, dict):
        done = p.get("cases_done", p.get("done", p.get("completed", 0))) or 0
        total = p.get("cases_total", p.get("total", 0)) or 0
        return int(done), int(total)
    done = sub.get("cases_done", 0) or 0
    total = sub.get("cases_total", 0) or 0
    return int(done), int(total)


def queue_line(sub: dict[str, Any]) -> str | None:
    """``  queue cpu: position 2 of 5, about 3 min (position × median run / workers online)`` while queued."""
    q = sub.get("queue")
    if not isinstance(q, dict) or not q.get("position"):
        return None
    line = f"  queue {q.get('queue')}: position {q.get('position')} of {q.get('queued')}"
    est, workers, med = q.get("estimate_s"), q.get("workers_online"), q.get("median_run_s")
    if isinstance(est, (int, float)):
        wait = f"{est:.0f} s" if est < 120 else f"{est / 60:.0f} min" if est < 7200 else f"{est / 3600:.1f} h"
        line += (f", about {wait} (position {q.get('position')} × median run {_fmt(med, 1)} s / "
                 f"{workers} worker{'s' if workers != 1 else ''} online)")
    elif not workers:
        line += ", no worker online serves this queue yet: no estimate"
    else:
        line += ", no finished run on this queue yet to estimate the wait"
    return line


def _print_submission(sub: dict[str, Any]) -> None:
    done, total = progress_of(sub)
    line = f"submission {sub.get('id')}: {sub.get('state')}"
    if total:
        line += f"  ({done}/{total} cases)"
    if sub.get("reason"):
        line += f"  — {sub['reason']}"
    out.print(line)
    waiting = queue_line(sub)
    if waiting:
        out.print(waiting, markup=False)
    scores = [(k, sub.get(k)) for k in ("dsc", "nsd", "runtime_s") if sub.get(k) is not None]
    if scores:
        out.print("  " + "  ".join(f"{k.upper() if k != 'runtime_s' else 'runtime'}={_fmt(v)}" for k, v in scores))
    _print_feedback_note(sub)


def _print_feedback_note(data: Any) -> None:
    """The one line saying what the track's feedback policy leaves out (the server writes it)."""
    if isinstance(data, dict) and data.get("feedback_note"):
        out.print(f"note: {data['feedback_note']}", markup=False)


# ----------------------------------------------------------------------------------------- commands


def configure(
    url: str | None = typer.Option(None, help="SegArena's address, e.g. https://arena.example.org"),
    token: str | None = typer.Option(None, help="Your API token (stored with mode 0600)."),
    challenge: str | None = typer.Option(None, help="Default challenge slug."),
    show: bool = typer.Option(False, "--show", help="Print the effective configuration and exit."),
) -> None:
    """Store the server address, your API token and the default challenge in the config file."""
    if show or not any((url, token, challenge)):
        cfg = load_config(**OPTIONS)
        tok = f"{cfg.token[:6]}…" if cfg.token else "(none)"
        out.print(f"config file: {config_path()}\nurl: {cfg.url}\ntoken: {tok}\nchallenge: {cfg.challenge}")
        return
    path = save_config(url=url, token=token, challenge=challenge)
    out.print(f"saved to {path}")


def submit(
    archive: Path = typer.Argument(..., help="The image archive: docker save IMAGE | gzip > IMAGE.tar.gz"),
    track: str = typer.Option("main", "--track", "-t", help="Track slug within the challenge."),
    label: str = typer.Option("", "--label", "-l", help="A name for this submission, shown to your team."),
    reproduces: int | None = typer.Option(None, help="Reproducibility track: id of the submission this reproduces."),
    chunk_mb: int = typer.Option(DEFAULT_CHUNK_BYTES // 2**20, help="Upload chunk size in MiB."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Then follow the run until it finishes."),
) -> None:
    """Upload an image archive to a track; re-run the same command to resume an interrupted upload."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with open_client(timeout=300.0) as client, Progress(
        TextColumn("[bold]uploading[/] {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=err, transient=False,
    ) as bar:
        task = bar.add_task(Path(archive).name, total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            sub = upload_archive(client, Path(archive), track=track, label=label, reproduces=reproduces,
                                 chunk_bytes=max(1, chunk_mb) * 2**20, on_progress=on_progress,
                                 on_event=lambda m: bar.console.print(f"[yellow]{m}[/]"))
        except KeyboardInterrupt:
            bar.stop()
            err.print("interrupted: run the same command again to resume the upload")
            raise typer.Exit(130) from None
    _print_submission(sub)
    out.print(f"follow it with: segarena status {sub.get('id')} --watch")
    if watch:
        status(sub.get("id"), watch=True, interval=2.0, as_json=False)


def _list_submissions(client: SegArenaClient) -> None:
    from rich.table import Table

    subs = client.get("/api/submissions")
    if isinstance(subs, dict):
        subs = subs.get("items", subs.get("submissions", []))
    table = Table("id", "track", "label", "state", "DSC", "NSD", "runtime (s)", "created", box=None)
    for s in subs:
        track = s.get("track") or s.get("track_slug") or s.get("track_id")
        if isinstance(track, dict):
            track = track.get("slug")
        table.add_row(str(s.get("id")), str(track), s.get("label") or "", str(s.get("state")),
                      _fmt(s.get("dsc")), _fmt(s.get("nsd")), _fmt(s.get("runtime_s"), 2),
                      when(s.get("created_at")))
    out.print(table if subs else "no submissions yet")
    _print_usage(_my_usage(client))


def _my_usage(client: SegArenaClient) -> list[dict[str, Any]] | None:
    """The team's compute per track (GET /api/me/usage); None from a server without it."""
    try:
        rows = client.get("/api/me/usage")
    except CliError as exc:
        if exc.status == 404:
            return None
        raise
    return rows if isinstance(rows, list) else None


def _budget_cell(row: dict[str, Any], resource: str) -> str:
    budget, pct = row.get(f"budget_{resource}_s"), row.get(f"{resource}_percent")
    if not budget:
        return "no budget"
    flag = " — USED UP: new submissions refused" if (pct or 0) >= 100 else (" — warning" if (pct or 0) >= 70 else "")
    return f"{_fmt(budget, 1)} s ({_fmt(pct, 1)} % used){flag}"


def _print_usage(rows: list[dict[str, Any]] | None) -> None:
    """Compute used per track (container CPU-, GPU- and wall-seconds) with the budgets, when there is any."""
    if not rows:
        return
    from rich.table import Table

    table = Table("challenge/track", "CPU-s", "GPU-s", "wall-s", "cases", "CPU budget", "GPU budget",
                  title="compute used by your team (organizer re-runs not counted)", box=None)
    for r in rows:
        table.add_row(f"{r.get('challenge')}/{r.get('track')}", _fmt(r.get("cpu_s"), 1), _fmt(r.get("gpu_s"), 1),
                      _fmt(r.get("wall_s"), 1), str(r.get("cases")), _budget_cell(r, "cpu"), _budget_cell(r, "gpu"))
    out.print(table)


def _watch(client: SegArenaClient, sub_id: int, interval: float) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn

    sub = client.get(f"/api/submissions/{sub_id}")
    seen_cases: set[str] = set()
    last_state = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} cases"),
                  console=out, transient=False) as bar:
        task = bar.add_task(f"submission {sub_id}", total=None)
        while True:
            state = sub.get("state")
            done, total = progress_of(sub)
            if state != last_state:
                bar.console.print(f"{now()} {state}"
                                  + (f" — {sub['reason']}" if sub.get("reason") else ""))
                last_state = state
            if done > len(seen_cases):  # new case results: fetch them for the per-case lines
                try:
                    res = client.get(f"/api/submissions/{sub_id}/results")
                    sub = {**sub, "cases": res.get("cases", []) if isinstance(res, dict) else []}
                except CliError:
                    pass
            for case in _cases(sub):
                cid = case.get("case_id") or case.get("case")
                if cid and cid not in seen_cases:
                    seen_cases.add(cid)
                    bar.console.print(_case_line(case))
            bar.update(task, completed=done, total=total or None,
                       description=f"submission {sub_id} [{state}]")
            if state in FINAL:
                break
            time.sleep(interval)
            sub = client.get(f"/api/submissions/{sub_id}")
    return sub


def _cases(sub: dict[str, Any]) -> list[dict[str, Any]]:
    p = sub.get("progress")
    cases = (p.get("cases") if isinstance(p, dict) else None) or sub.get("cases") or []
    return [c for c in cases if isinstance(c, dict)]


def _case_line(case: dict[str, Any]) -> str:
    cid = case.get("case_id") or case.get("case")
    parts = [f"  {cid}", str(case.get("status", ""))]
    if case.get("undefined"):  # cvpr24: a label absent from both masks; left out of the means and ranks
        parts.append(f"DSC undefined NSD {_fmt(case.get('nsd'))}")
    elif case.get("dsc") is not None:
        parts.append(f"DSC {_fmt(case.get('dsc'))} NSD {_fmt(case.get('nsd'))}")
    if case.get("runtime_s") is not None:
        parts.append(f"{_fmt(case.get('runtime_s'), 2)} s")
    if case.get("reason"):
        parts.append(f"— {case['reason']}")
    return "  ".join(parts)


def status(
    submission_id: int | None = typer.Argument(None, help="A submission id; without it, list your submissions."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow it live until it finishes."),
    interval: float = typer.Option(2.0, help="Seconds between polls with --watch."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Show a submission's state and per-case progress, or list your submissions."""
    with open_client() as client:
        if submission_id is None:
            if as_json:
                out.print_json(data=client.get("/api/submissions"))
            else:
                _list_submissions(client)
            return
        if watch:
            sub = _watch(client, submission_id, interval)
        else:
            sub = client.get(f"/api/submissions/{submission_id}")
        if as_json:
            out.print_json(data=sub)
            return
        _print_submission(sub)
        if sub.get("state") == "failed":
            raise typer.Exit(3)


def logs(submission_id: int = typer.Argument(..., help="A submission id.")) -> None:
    """Print a submission's logs: the worker's run log and each case's stdout/stderr tail."""
    with open_client() as client:
        data = client.get(f"/api/submissions/{submission_id}/logs")
    if isinstance(data, str):
        out.print(data, markup=False)
        return
    if isinstance(data, dict):
        for key in ("log", "log_tail", "text"):
            if data.get(key):
                out.print(str(data[key]).rstrip(), markup=False)
        runs = data.get("runs") or []
        for run in runs if isinstance(runs, list) else []:
            out.print(f"--- attempt {run.get('attempt')} ({run.get('state')}) ---", markup=False)
            if run.get("log_tail"):
                out.print(run["log_tail"].rstrip(), markup=False)
        cases = data.get("cases") or []
        for case in cases if isinstance(cases, list) else []:
            out.print(f"--- {case.get('case_id')} [{case.get('status')}] {case.get('reason') or ''}".rstrip(), markup=False)
            for stream in ("stdout_tail", "stderr_tail", "stdout", "stderr"):
                if case.get(stream):
                    out.print(f"[{stream.split('_')[0]}]\n{case[stream].rstrip()}", markup=False)
        _print_feedback_note(data)
        if not any(data.get(k) for k in ("log", "log_tail", "text", "runs", "cases", "feedback_note")):
            out.print_json(data=data)
        return
    out.print_json(data=data)


def results(
    submission_id: int = typer.Argument(..., help="A submission id."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Per-modality and per-case scores (DSC, NSD, runtime) of a submission."""
    from rich.table import Table

    with open_client() as client:
        data = client.get(f"/api/submissions/{submission_id}/results")
    if as_json or not isinstance(data, dict):
        out.print_json(data=data)
        return
    head = [f"submission {data.get('id', data.get('submission_id', submission_id))}"]
    for k in ("state", "metric_profile", "dsc", "nsd", "runtime_s"):
        if data.get(k) is not None:
            head.append(f"{k}={_fmt(data[k])}")
    out.print("  ".join(head))
    _print_feedback_note(data)
    agg = data.get("aggregates") or {}
    per_mod = agg.get("by_modality") or data.get("per_modality")
    if per_mod:
        rows = per_mod.items() if isinstance(per_mod, dict) else [(m.get("modality"), m) for m in per_mod]
        table = Table("modality", "cases", "DSC", "NSD", "runtime (s)", title="per modality", box=None)
        for mod, m in rows:
            table.add_row(str(mod), _fmt(m.get("cases", m.get("n"))), _fmt(m.get("dsc")), _fmt(m.get("nsd")),
                          _fmt(m.get("runtime_s"), 2))
        out.print(table)
    cases = data.get("cases") or []
    if cases:
        table = Table("case", "modality", "status", "DSC", "NSD", "runtime (s)", "reason", title="per case", box=None)
        for c in cases:
            table.add_row(str(c.get("case_id") or c.get("case")), str(c.get("modality", "")), str(c.get("status", "")),
                          "undefined" if c.get("undefined") else _fmt(c.get("dsc")),  # cvpr24: left out of means
                          _fmt(c.get("nsd")), _fmt(c.get("runtime_s"), 2), c.get("reason") or "")
        out.print(table)


def leaderboard(
    track: str = typer.Argument("main", help="Track slug within the challenge."),
    csv: bool = typer.Option(False, "--csv", help="Print the leaderboard as CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """The public leaderboard of a track (works without a token)."""
    from rich.table import Table

    with open_client(need_token=False) as client:
        path = client.track_path(track) + "/leaderboard"
        if csv:
            write(client.get(path + ".csv", expect_json=False))
            return
        data = client.get(path)
    if as_json or not isinstance(data, dict):
        out.print_json(data=data)
        return
    rows = data.get("rows") or []
    modalities: list[str] = list(data.get("modalities") or [])
    title = f"{data.get('challenge_title') or data.get('challenge') or ''} — {data.get('title') or track}"
    interactive = data.get("iterations") is not None
    extra = ("DSC AUC", "NSD AUC") if interactive else ()  # interactive: DSC/NSD are the final scores
    table = Table("rank", "team", "submission", *extra, "DSC", "NSD", "runtime (s)",
                  *[f"{m} DSC/NSD" for m in modalities], title=title, caption=_caption(data), box=None)
    for r in rows:
        team = str(r.get("team"))
        if r.get("baseline"):
            team += " (baseline)"
        if r.get("excluded"):
            team += " (excluded)"
        table.add_row(_fmt(r.get("rank")), team, r.get("label") or f"#{r.get('submission_id')}",
                      *([_fmt(r.get("dsc_auc")), _fmt(r.get("nsd_auc"))] if interactive else []), _fmt(r.get("dsc")),
                      _fmt(r.get("nsd")), _fmt(r.get("runtime_s"), 2),
                      *[f"{_fmt(r.get(f'{m}:dsc'), 3)}/{_fmt(r.get(f'{m}:nsd'), 3)}" for m in modalities])
    out.print(table if rows else f"no entries on {track} yet")


def _caption(data: dict[str, Any]) -> str:
    bits = []
    if data.get("scheme_label") or data.get("scheme"):
        bits.append(f"ranking: {data.get('scheme_label') or data.get('scheme')}")
    for k in ("metric_profile", "row_policy", "visibility"):
        if data.get(k):
            bits.append(f"{k.replace('_', ' ')}: {data[k]}")
    if data.get("iterations") is not None:
        bits.append(f"interactive: {data.get('prompt') or 'box'} prompt, then {data['iterations']} clicks "
                    "(DSC/NSD final)")
    elif data.get("prompt") and data["prompt"] != "box":
        bits.append(f"prompt: {data['prompt']}")
    if data.get("timing"):
        bits.append(f"timing: {data.get('timing_label') or data['timing']}")
    if data.get("frozen"):
        bits.append(f"frozen at {data.get('frozen_at')}")
    return "; ".join(bits)


def cancel(submission_id: int = typer.Argument(..., help="A submission id.")) -> None:
    """Cancel a queued or running submission."""
    with open_client() as client:
        sub = client.post(f"/api/submissions/{submission_id}/cancel")
    _print_submission(sub if isinstance(sub, dict) else {"id": submission_id, "state": "cancelled"})


def whoami() -> None:
    """Who the configured token belongs to (GET /api/me), with the team's compute per track (GET /api/me/usage)."""
    with open_client() as client:
        me = client.get("/api/me")
        usage = _my_usage(client) if isinstance(me, dict) else None
    if usage is not None:
        me["usage"] = usage  # the team's compute per track and its budgets (docs/accounting.md)
    out.print(json.dumps(me, indent=1, default=str))


def register(app: typer.Typer) -> None:
    """Add the participant commands to ``app``."""
    for fn in (configure, whoami, submit, status, logs, results, leaderboard, cancel):
        app.command(fn.__name__)(fn)
