"""The ``segarena`` command line: serve, worker, and the sub-commands of each part of the platform."""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(help="SegArena: challenge evaluation platform for promptable medical image segmentation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port to listen on."),
          workers: int = typer.Option(1, help="Uvicorn worker processes.")) -> None:
    """Run the API and the leaderboard pages."""
    import uvicorn

    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


@app.command()
def worker(queues: str = typer.Option(None, help="Queues to consume (default: SEGARENA_WORKER_QUEUES, 'cpu')."),
           beat: bool = typer.Option(True, help="Also run the periodic reaper (one worker per deployment should).")) -> None:
    """Run a Celery worker that executes submissions (one at a time)."""
    from api.settings import get_settings
    from worker.celery_app import get_celery

    settings = get_settings()
    argv = ["worker", "--loglevel=INFO", "--concurrency=1", "--pool=solo",
            "-Q", queues or ",".join(settings.queues), "-n", f"segarena-{os.getpid()}@%h"]
    if beat:
        argv += ["-B", "-s", str(settings.data_dir / "celerybeat-schedule")]
    get_celery().worker_main(argv)


def _mount(module: str, name: str, help_text: str) -> None:
    try:
        sub = importlib.import_module(module).app
    except (ImportError, AttributeError):  # the part is not installed in this build
        return
    app.add_typer(sub, name=name, help=help_text)


_mount("evaluator.cli", "score-tools", "Scoring tools.")
_mount("data_manifests.cli", "testset", "Generate, import, verify and preview test sets.")
_mount("segarena.participant", "participant", "Participant commands.")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
