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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
import typer.core
from typer.core import TyperGroup

from segarena.client import CliError

if TYPE_CHECKING:
    from typer import _click as click
else:  # typer >= 0.2x vendors click as typer._click (and no longer installs click); older typer uses click itself
    click = getattr(typer.core, "_click", None) or importlib.import_module("click")


def _score_command() -> click.Command:
    """``segarena score --pred DIR --gt DIR``: the evaluator's ``score`` command, at the top level."""
    sub = importlib.import_module("evaluator.cli").app
    single = typer.Typer(add_completion=False)
    single.registered_commands.extend(c for c in sub.registered_commands if (c.name or "") == "score")
    return typer.main.get_command(single)


def _testset_group() -> click.Command:
    return typer.main.get_command(importlib.import_module("data_manifests.cli").app)


# Sub-commands whose modules import numpy, pandas or scipy: loaded when they run (or their own --help is asked for),
# listed in `segarena --help` from these lines, so that the root's help and the participant commands start fast.
LAZY_COMMANDS: dict[str, tuple[Callable[[], click.Command], str]] = {
    "score": (_score_command, "Score a directory of predictions against the ground truth (DSC, NSD)."),
    "testset": (_testset_group, "Generate, import, verify and preview test sets."),
}


class _LazyPlaceholder(typer.core.TyperCommand):
    """Stands for a lazy sub-command in the root's help; replaced by the real one before it runs."""


class LazyGroup(TyperGroup):
    """The root group: eager commands as usual, plus :data:`LAZY_COMMANDS` imported on first use."""

    _listing = False  # True while the root formats its own help (lazy commands listed without importing them)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (_, short_help) in LAZY_COMMANDS.items():
            self.commands.setdefault(name, _LazyPlaceholder(name, help=short_help, short_help=short_help))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if isinstance(cmd, _LazyPlaceholder) and not self._listing:
            try:
                real = LAZY_COMMANDS[cmd_name][0]()
            except ImportError as exc:  # that part of the platform is not installed in this build
                raise CliError(f"'segarena {cmd_name}' is not available in this installation ({exc}); "
                               "install it with: pip install 'segarena[check]'") from None
            real.name = cmd_name
            real.help = real.help or cmd.help
            self.commands[cmd_name] = cmd = real
        return cmd

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(help="SegArena: challenge evaluation platform for promptable medical image segmentation.",
                  cls=LazyGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # click's plain help: typer's rich help imports markdown-it (~0.15 s)


@app.callback()
def _root(url: str | None = typer.Option(None, "--url", help="Server address (default: SEGARENA_URL, the config "
                                            "file, or http://127.0.0.1:8000)."),
          token: str | None = typer.Option(None, "--token", help="API token (default: SEGARENA_TOKEN or the config file)."),
          challenge: str | None = typer.Option(None, "--challenge", "-c", help="Challenge slug (default: "
                                                  "SEGARENA_CHALLENGE, the config file, or 'demo').")) -> None:
    """SegArena: challenge evaluation platform for promptable medical image segmentation."""
    from segarena.participant import OPTIONS

    OPTIONS.update(url=url, token=token, challenge=challenge)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port to listen on."),
          workers: int = typer.Option(1, help="Uvicorn worker processes."),
          access_log: bool = typer.Option(True, help="Log every request."),
          http: str = typer.Option("auto", help="HTTP parser: auto (httptools when installed), httptools or h11.")
          ) -> None:
    """Run the API and the leaderboard pages (request-head timeout SEGARENA_HEADER_TIMEOUT_S, at most
    SEGARENA_MAX_CONNECTIONS concurrent connections per process)."""
    from segarena.serve import PARSERS, run

    if http not in PARSERS:
        raise CliError(f"--http {http!r}: choose one of {', '.join(PARSERS)}")
    run(host=host, port=port, workers=workers, access_log=access_log, http=http)


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
    from api.execution.celery import make_trusted_celery, scorer_worker_options
    from api.settings import get_settings

    settings = get_settings()
    make_trusted_celery(settings).Worker(**scorer_worker_options(settings, beat=beat)).start()


from segarena import participant as _participant  # noqa: E402

_participant.register(app)


@app.command()
def check(archive: str = typer.Argument(..., help="The image archive you are about to submit."),
          track: str = typer.Option("main", "--track", "-t", help="Check against this track's caps (needs the server); "
                                    "with --offline, the default caps."),
          cases: int = typer.Option(3, help="How many public sample cases to run (2D and 3D)."),
          offline: bool = typer.Option(False, help="Do not ask the server for the track's caps."),
          keep: bool = typer.Option(False, help="Keep the loaded image afterwards."),
          interactive: bool = typer.Option(False, "--interactive", help="Run the interactive iteration loop (as a "
                                           "track of kind interactive does; automatic for such a track): the first "
                                           "prompt, then refinement iterations with clicks simulated from the "
                                           "public samples' ground truth."),
          prompt: str | None = typer.Option(None, "--prompt", help="box, point or box+point (default: the track's)."),
          iterations: int | None = typer.Option(None, "--iterations", help="Refinement iterations after the first "
                                                "prompt (interactive; default: the track's, 5 offline)."),
          profile: str | None = typer.Option(None, "--profile", help="Scoring profile: default, cvpr24 or cvpr25 "
                                             "(default: the track's).")) -> None:
    """Pre-flight an image archive: same sandbox and caps as the judges, on a few public sample cases."""
    from segarena.check import run_check

    raise typer.Exit(run_check(archive, track=track, n_cases=cases, offline=offline, keep_image=keep,
                               interactive=interactive, prompt=prompt, iterations=iterations, profile=profile))


@app.command()
def demo(timeout: float = typer.Option(1800, help="Give up waiting for the demo's runs after this many seconds."),
         wait: bool = typer.Option(True, help="Follow the runs until they finish (the reproduction is submitted once "
                                   "the entry it reproduces has succeeded).")) -> None:
    """Set up the demo challenge on a running SegArena (embedded mode): baselines and three ranked teams on main,
    two booster entries and a reproduction."""
    from segarena.demo import run_demo

    raise typer.Exit(run_demo(timeout=timeout, wait=wait))


from segarena.admin import app as _admin_app  # noqa: E402

app.add_typer(_admin_app, name="admin")
from segarena.notifications import register as _register_notifications  # noqa: E402

_register_notifications(app, _admin_app)  # segarena notifications; segarena admin webhook ...
from segarena.signup import register as _register_signup  # noqa: E402

_register_signup(app, _admin_app)  # segarena signup ..., accept-terms; segarena admin signups ...


def main() -> None:
    from segarena.output import clean

    try:
        app(standalone_mode=True)
    except CliError as exc:
        print(clean(f"error: {exc.message}"), file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("SEGARENA_DEBUG"):
            raise
        print(clean(f"error: {exc.__class__.__name__}: {exc} (set SEGARENA_DEBUG=1 to see the traceback)"), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
