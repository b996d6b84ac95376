"""The fail-fast check runs only for a case inside the rule's window (api/execution/scoring.in_fail_fast_window): the
scorer and the upload route skip it (a session and five queries) for every other case."""

from __future__ import annotations

from api.execution.scoring import in_fail_fast_window
from data_manifests.sets import check_testset


def test_only_the_first_k_cases_in_test_set_order_are_in_the_window():
    manifest = check_testset("micro")
    ids = [c.id for c in manifest.cases]
    assert [c for c in ids if in_fail_fast_window(manifest, 3, c)] == ids[:3]
    assert not any(in_fail_fast_window(manifest, 0, c) for c in ids)  # rule off
    assert all(in_fail_fast_window(manifest, 100, c) for c in ids)  # k past the end: every case
    assert not in_fail_fast_window(manifest, 3, "not-a-case")
