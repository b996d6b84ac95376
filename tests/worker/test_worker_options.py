"""The execution worker and the scorer start ``app.Worker`` with options of their own instead of parsing a command
line through Celery's (whose imports cost every start ~0.08 s of CPU): those options must be exactly what the
command line they replace gives ``app.Worker`` (the pool, concurrency, queues, node name, log level, beat)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.concurrency import get_implementation
from celery.utils.log import mlevel


def _normalized(app: Celery, options: dict[str, Any]) -> dict[str, Any]:
    """What ``app.Worker`` makes of ``options``: values in one form; the app's defaults as if not given."""
    out = {}
    defaults = {"optimization": "default", "prefetch_multiplier": app.conf.worker_prefetch_multiplier,
                "schedule_filename": app.conf.beat_schedule_filename}
    for name, given in options.items():
        key = "pool" if name == "pool_cls" else name
        value = get_implementation(given) if key == "pool" else mlevel(given) if key == "loglevel" else given
        if value is None or value is False or value == () or defaults.get(key, object()) == value:
            continue
        out[key] = value
    return out


def _from_command_line(app: Celery, argv: list[str]) -> dict[str, Any]:
    """The keyword arguments Celery's ``worker`` command gives ``app.Worker`` for ``argv`` (nothing is started)."""
    captured: dict[str, Any] = {}

    class Recorder:
        exitcode = 0

        def __init__(self, **kwargs: Any) -> None:
            captured.update(kwargs)

        def start(self) -> None:
            pass

    app.Worker = Recorder  # type: ignore[method-assign]
    app.worker_main(argv)
    assert captured, "the command line started no worker"
    return captured


@pytest.mark.parametrize("queues", [["cpu"], ["cpu", "gpu-a100"]])
def test_execution_worker_options_are_the_command_lines(queues):
    from worker.exec_tasks import worker_options

    app = Celery("options-test", broker="memory://")
    config = SimpleNamespace(worker_name="w1")
    argv = ["worker", "--loglevel=INFO", "--pool=solo", "--concurrency=1", "-Q", ",".join(queues), "-n", "w1@%h",
            "--without-gossip", "--without-mingle"]
    ours = _normalized(app, worker_options(config, queues))  # type: ignore[arg-type]
    assert ours == _normalized(app, _from_command_line(app, argv))
    assert ours["queues"] == queues and ours["concurrency"] == 1 and ours["hostname"].startswith("w1@")


@pytest.mark.parametrize("beat", [True, False])
def test_scorer_options_are_the_command_lines(tmp_path, beat):
    from api.execution.celery import scorer_worker_options
    from api.execution.contract import SCORE_QUEUE

    app = Celery("options-test", broker="memory://")
    settings = SimpleNamespace(data_dir=tmp_path)
    argv = ["worker", "--loglevel=INFO", "--concurrency=1", "--pool=solo", "-Q", SCORE_QUEUE, "-n", "scorer@%h"]
    if beat:
        argv += ["-B", "-s", str(tmp_path / "scorer-beat-schedule")]
    ours = _normalized(app, scorer_worker_options(settings, beat=beat))
    assert ours == _normalized(app, _from_command_line(app, argv))
    assert ours.get("beat", False) is beat and ours["queues"] == [SCORE_QUEUE]
