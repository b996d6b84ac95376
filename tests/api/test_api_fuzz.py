"""Property-based fuzzing of the OpenAPI schema (schemathesis, in-process ASGI): bad input never yields a 5xx.

Every operation gets a bounded number of generated requests, valid (positive) and invalid (negative),
twice: with generated path parameters (mostly unknown objects) and with the path parameters of real
objects (a challenge, a track, a team, a submission, an upload), so that generated bodies and queries
reach the services. An operation that the real-ids run reaches gets fewer generated-id examples
(``UNKNOWN_ID_EXAMPLES``): with an unknown object it ends at the lookup, whatever its body; the examples
are spent where they reach code (most of this module's CPU goes to generating the cases: 32 -> 25 s).
Requests are sent as an organizer who is also a team member, so participant routes (uploads, submissions)
and organizer routes are both reached past authentication. (schemathesis' own
pytest plugin does not run under pytest 9, so the operations are driven with hypothesis directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from tests.api_helpers import auth, schema_test_world
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode


MAX_EXAMPLES = 15
UNKNOWN_ID_EXAMPLES = 5  # random ids, on an operation the real-ids run also fuzzes: the lookup's 404/422 answers


@pytest.fixture
def fuzz_env(settings):
    return schema_test_world(settings, name="fuzz")


@pytest.mark.parametrize("known_objects", [False, True], ids=["random-ids", "real-ids"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_no_server_errors(fuzz_env, mode, known_objects):
    app, token, known = fuzz_env
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        path_parameters = None
        reached_with_real_ids = any(p.name in known for p in operation.path_parameters)
        examples = MAX_EXAMPLES
        if known_objects:
            if not reached_with_real_ids:
                continue  # no ids in this path: already covered with random ids
            path_parameters = {p.name: known[p.name] for p in operation.path_parameters if p.name in known}
        elif reached_with_real_ids:
            examples = UNKNOWN_ID_EXAMPLES

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @hsettings(max_examples=examples, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(headers={**(case.headers or {}), **auth(token)})
            ctype = response.headers.get("content-type") or ""
            ctype = ctype[0] if isinstance(ctype, list) else ctype
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code} "
                                f"{response.text[:300]}")
            elif response.status_code >= 400 and ctype.startswith("application/json"):
                body = response.json()
                if not (isinstance(body, dict) and {"code", "message"} <= set(body)):
                    failures.append(f"{case.method} {case.formatted_path}: error body without code/message: {body}")

        try:
            run()
        except Unsatisfiable:  # nothing to break in this mode (e.g. negative cases of a route without inputs)
            continue
    assert operations >= 25
    assert not failures, "\n".join(sorted(set(failures))[:20])
