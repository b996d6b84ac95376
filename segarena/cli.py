"""The ``segarena`` command line.

Platform: ``serve`` (API), ``scorer`` (trusted scoring and reaper), ``worker`` (execution host), ``demo``.
Participants: ``configure``, ``submit``, ``status``, ``logs``, ``results``, ``leaderboard``, ``cancel``, ``check``.
Organizers: ``admin ...``. Scoring and test sets:
``score`` (the evaluator's), ``testset ...`` (data_manifests'). Errors print one line, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

import typer

from segarena.client import CliError

app = typer.Typer(help="SegArena: challenge evaluation platform for promptable medical image segmentation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _root(url: Optional[str] = typer.Option(None, "--url", help="Server address (default: SEGARENA_URL, the config "
                                            "file, or http://127.0.0.1:8000)."),
          token: Optional[str] = typer.Option(None, "--token", help="API token (default: SEGARENA_TOKEN or the config file)."),
          challenge: Optional[str] = typer.Option(None, "--challenge", "-c", help="Challenge slug (default: "
                                                  "SEGARENA_CHALLENGE, the config file, or 'demo').")) -> None:
    """SegArena: challenge evaluation platform for promptable medical image segmentation."""
    from segarena.participant import OPTIONS

    OPTIONS.update(url=url, token=token, challenge=challenge)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port to listen on."),
          workers: int = typer.Option(1, help="Uvicorn worker processes."),
          access_log: bool = typer.Option(True, help="Log every request.")) -> None:
    """Run the API and the leaderboard pages (request-head timeout SEGARENA_HEADER_TIMEOUT_S, at most
    SEGARENA_MAX_CONNECTIONS concurrent connections per process)."""
    from segarena.serve import run

    run(host=host, port=port, workers=workers, access_log=access_log)


@app.command()
def worker(queues: str = typer.Option(None, help="Declared queues to consume (default: SEGARENA_WORKER_QUEUES, else "
                                      "every queue of SEGARENA_QUEUES of this worker's kind)."),
           loglevel: str = typer.Option("INFO", help="Log level.")) -> None:
    """Run an execution host: takes shards from the broker and runs them through the API's worker routes
    (docs/worker-protocol.md). Needs SEGARENA_API_URL, SEGARENA_WORKER_TOKEN (an organizer creates one:
    segarena admin worker create NAME --queue cpu) and SEGARENA_BROKER_URL; no database, no shared storage."""
    import logging

    from worker.config import ConfigError, load_config
    from worker.exec_tasks import run_execution_worker

    logging.basicConfig(level=getattr(logging, loglevel.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        config = load_config(**({"worker_queues": queues} if queues else {}))
        run_execution_worker(config, loglevel=loglevel.upper())
    except ConfigError as exc:
        typer.echo(f"segarena worker: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def scorer(beat: bool = typer.Option(True, help="Also run the trusted reaper (one scorer per deployment should).")) -> None:
    """Run the trusted scorer: consumes the `score` queue (validates and scores uploaded case outputs next to the
    database and the ground truth, finishes runs) and, with --beat, the trusted reaper (lost shards requeued,
    queued runs re-sent, stale uploads expired, expired archives deleted)."""
    from api.execution.celery import make_trusted_celery
    from api.execution.contract import SCORE_QUEUE
    from api.settings import get_settings

    settings = get_settings()
    argv = ["worker", "--loglevel=INFO", "--concurrency=1", "--pool=solo", "-Q", SCORE_QUEUE, "-n", "scorer@%h"]
    if beat:
        argv += ["-B", "-s", str(settings.data_dir / "scorer-beat-schedule")]
    make_trusted_celery(settings).worker_main(argv)


from segarena import participant as _participant  # noqa: E402

_participant.register(app)


@app.command()
def check(archive: str = typer.Argument(..., help="The image archive you are about to submit."),
          track: str = typer.Option("main", "--track", "-t", help="Check against this track's caps (needs the server); "
                                    "with --offline, the default caps."),
          cases: int = typer.Option(3, help="How many public sample cases to run (2D and 3D)."),
          offline: bool = typer.Option(False, help="Do not ask the server for the track's caps."),
          keep: bool = typer.Option(False, help="Keep the loaded image afterwards.")) -> None:
    """Pre-flight an image archive: same sandbox and caps as the judges, on a few public sample cases."""
    from segarena.check import run_check

    raise typer.Exit(run_check(archive, track=track, n_cases=cases, offline=offline, keep_image=keep))


@app.command()
def demo(timeout: float = typer.Option(900, help="Give up waiting for the baselines after this many seconds."),
         wait: bool = typer.Option(True, help="Follow the baseline runs until they finish.")) -> None:
    """Set up the demo challenge with two baseline submissions on a running SegArena (embedded mode)."""
    from segarena.demo import run_demo

    raise typer.Exit(run_demo(timeout=timeout, wait=wait))


def _mount(module: str, name: str, help_text: str) -> typer.Typer | None:
    try:
        sub = importlib.import_module(module).app
    except (ImportError, AttributeError):  # the part is not installed in this build
        return None
    app.add_typer(sub, name=name, help=help_text)
    return sub


def _mount_score() -> None:
    """``segarena score --pred DIR --gt DIR``: the evaluator's score command, registered at the top level."""
    try:
        sub = importlib.import_module("evaluator.cli").app
    except (ImportError, AttributeError):
        return
    others = []
    for cmd in sub.registered_commands:
        name = cmd.name or (cmd.callback.__name__.replace("_", "-") if cmd.callback else "")
        if name == "score":
            app.registered_commands.append(cmd)
        else:
            others.append(cmd)
    if len(sub.registered_commands) == 1 and not sub.registered_commands[0].name and sub.registered_callback is None:
        # a one-command app whose command has another function name: that command is 'score'
        if not any((c.name or "") == "score" for c in app.registered_commands):
            cmd = sub.registered_commands[0]
            app.command("score", help=cmd.help)(cmd.callback)
        others = []
    if others or sub.registered_groups:
        app.add_typer(sub, name="evaluator", help="Scoring tools.")


_mount_score()
_mount("data_manifests.cli", "testset", "Generate, import, verify and preview test sets.")
from segarena.admin import app as _admin_app  # noqa: E402

app.add_typer(_admin_app, name="admin")
from segarena.notifications import register as _register_notifications  # noqa: E402

_register_notifications(app, _admin_app)  # segarena notifications; segarena admin webhook ...


def main() -> None:
    from segarena.output import clean

    try:
        app(standalone_mode=True)
    except CliError as exc:
        print(clean(f"error: {exc.message}"), file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one line for the user; the trace on request
        if os.environ.get("SEGARENA_DEBUG"):
            raise
        print(clean(f"error: {exc.__class__.__name__}: {exc} (set SEGARENA_DEBUG=1 to see the traceback)"), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
