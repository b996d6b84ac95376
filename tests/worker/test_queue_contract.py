"""One contract for ``SEGARENA_QUEUES`` (docs/worker-protocol.md, "Queues"): the API's parser
(``api.settings.parse_queues``, the definition) and the execution host's copy (``worker.config.parse_queues``;
``worker/`` may not import ``api/``) give identical answers — the same mapping, in the same order, or the same
error message — over a table of valid and invalid declarations."""

from __future__ import annotations

import pytest

from api.settings import QUEUE_KINDS as API_KINDS
from api.settings import QUEUE_NAME_RE as API_NAME_RE
from api.settings import parse_queues as api_parse
from worker.config import QUEUE_KINDS as WORKER_KINDS
from worker.config import QUEUE_NAME_RE as WORKER_NAME_RE
from worker.config import parse_queues as worker_parse

TABLE: list[tuple[str, dict[str, str] | str]] = [
    # valid: the answer
    ("cpu:cpu,gpu:gpu", {"cpu": "cpu", "gpu": "gpu"}),
    ("cpu", {"cpu": "cpu"}),
    ("gpu", {"gpu": "gpu"}),  # a bare name: gpu if it is "gpu", else cpu
    ("big", {"big": "cpu"}),
    ("cpu:cpu,gpu:gpu,big:cpu", {"cpu": "cpu", "gpu": "gpu", "big": "cpu"}),
    ("big:gpu,cpu:cpu", {"big": "gpu", "cpu": "cpu"}),  # declaration order kept
    (" cpu : cpu , gpu : gpu ", {"cpu": "cpu", "gpu": "gpu"}),  # spaces around names and kinds
    ("cpu:cpu,,gpu:gpu,", {"cpu": "cpu", "gpu": "gpu"}),  # empty items skipped
    ("a_b-9:cpu", {"a_b-9": "cpu"}),
    ("abcdefghijklmnop:cpu", {"abcdefghijklmnop": "cpu"}),  # 16 characters
    ("cpu:", {"cpu": "cpu"}),  # an empty kind is the default one
    # invalid: the error text (both must raise ValueError with exactly this message)
    ("", "SEGARENA_QUEUES declares no queue; e.g. SEGARENA_QUEUES=cpu:cpu,gpu:gpu"),
    (" , ,", "SEGARENA_QUEUES declares no queue; e.g. SEGARENA_QUEUES=cpu:cpu,gpu:gpu"),
    ("CPU:cpu", "SEGARENA_QUEUES: queue name 'CPU' must match ^[a-z0-9_-]{1,16}$ (e.g. cpu:cpu,gpu:gpu)"),
    ("abcdefghijklmnopq:cpu",
     "SEGARENA_QUEUES: queue name 'abcdefghijklmnopq' must match ^[a-z0-9_-]{1,16}$ (e.g. cpu:cpu,gpu:gpu)"),
    (":cpu", "SEGARENA_QUEUES: queue name '' must match ^[a-z0-9_-]{1,16}$ (e.g. cpu:cpu,gpu:gpu)"),
    ("a.b:cpu", "SEGARENA_QUEUES: queue name 'a.b' must match ^[a-z0-9_-]{1,16}$ (e.g. cpu:cpu,gpu:gpu)"),
    ("cpu:tpu", "SEGARENA_QUEUES: queue 'cpu' has kind 'tpu'; the kind is cpu or gpu"),
    ("cpu:GPU", "SEGARENA_QUEUES: queue 'cpu' has kind 'GPU'; the kind is cpu or gpu"),
    ("cpu:cpu:x", "SEGARENA_QUEUES: queue 'cpu' has kind 'cpu:x'; the kind is cpu or gpu"),
    ("cpu:cpu,cpu:gpu", "SEGARENA_QUEUES: queue 'cpu' is declared twice"),
    ("cpu,cpu", "SEGARENA_QUEUES: queue 'cpu' is declared twice"),
]


def _answer(parse, spec: str) -> tuple[str, object]:
    try:
        return "ok", list(parse(spec).items())  # a list: the order is part of the answer
    except ValueError as exc:
        return "error", str(exc)
    except Exception as exc:
        return "raised", f"{exc.__class__.__name__}: {exc}"


@pytest.mark.parametrize("spec, expected", TABLE, ids=[repr(s) for s, _ in TABLE])
def test_both_parsers_agree_with_the_contract(spec: str, expected: dict[str, str] | str) -> None:
    api_answer, worker_answer = _answer(api_parse, spec), _answer(worker_parse, spec)
    assert worker_answer == api_answer, f"worker.config.parse_queues drifted from api.settings for {spec!r}"
    if isinstance(expected, dict):
        assert api_answer == ("ok", list(expected.items()))
    else:
        assert api_answer == ("error", expected)


def test_the_constants_are_the_same() -> None:
    assert WORKER_KINDS == API_KINDS == ("cpu", "gpu")
    assert WORKER_NAME_RE == API_NAME_RE


def test_the_grammar_is_stated_in_the_protocol_document() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "worker-protocol.md").read_text()
    assert "## Queues" in doc and API_NAME_RE in doc and "tests/worker/test_queue_contract.py" in doc
