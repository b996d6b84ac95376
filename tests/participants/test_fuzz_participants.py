"""Property-based fuzzing of the participant routes (schemathesis, in-process ASGI, as tests/api/test_api_fuzz.py):
generated sign-ups, claims, terms, join codes and organizer decisions never yield a 5xx, and every error is JSON
{code, message}. Sent anonymously and as an organizer who is a team member."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.api_helpers import auth, schema_test_world

MAX_EXAMPLES = 25
OURS = ("/signups", "/participation", "/terms", "/join-code")


@pytest.mark.parametrize("as_organizer", [False, True], ids=["anonymous", "organizer"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_participant_routes_never_fail_with_5xx(settings, mode, as_organizer):
    app, token, known = schema_test_world(settings, name="fuzz-participants")
    settings.signup_per_hour = 10000  # generated sign-ups must reach the service, not the rate limit
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    seen = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not any(part in operation.path for part in OURS):
            continue
        seen += 1
        path_parameters = {p.name: known[p.name] for p in operation.path_parameters if p.name in known} or None

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @hsettings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
        def run(case):
            headers = {**(case.headers or {}), **(auth(token) if as_organizer else {})}
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.body!r:.200} -> {response.status_code} "
                                f"{response.text[:300]}")
            elif response.status_code >= 400:
                body = response.json()
                if not (isinstance(body, dict) and {"code", "message"} <= set(body)):
                    failures.append(f"{case.method} {case.formatted_path}: error body without code/message: {body}")

        try:
            run()
        except Unsatisfiable:
            continue
    assert seen >= 10
    assert not failures, "\n".join(sorted(set(failures))[:20])
