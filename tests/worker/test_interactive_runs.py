"""Interactive and point-prompt tracks end to end through THE execution path (tests/run_helpers.py: the real API app
over HTTP, the execution host ``worker.shard.ShardExecutor`` on a real Docker engine, the trusted scorer inline):
one sandboxed container per iteration, each next click from the trusted side, per-iteration DSC/NSD, AUCs, the
class budget; hostile images that ignore clicks, write nothing at iteration 3 or blow the budget; point prompts on
the standard path; the docker_run timing mode.

Images: behaviours click-* of tests/behaviours.py (tests/images/behaviour/scripts/click.py)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from api.db import migrate, session_scope
from api.models import CaseIteration, CaseResult, CaseStatus, Run, RunState, TrackKind
from tests.run_helpers import ShardedHost, create_run
from tests.worker_helpers import build_test_image, make_testset

pytestmark = pytest.mark.docker

K = 5


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    names = ("click-refine", "click-ignore", "click-silent3", "click-slow", "correct")
    return {n: build_test_image(docker_client, base_image, n) for n in names}


@pytest.fixture
def wsettings(settings):
    s = settings.model_copy(update={"heartbeat_timeout_s": 60, "max_attempts": 2, "execution": "sharded"})
    migrate(s.database_url)
    return s


@pytest.fixture
def small_set(tmp_path):  # one 2D and one 3D case: each case here is 1 + K containers
    return str(make_testset(tmp_path / "testset", n2d=1, n3d=1))


# micro's cases of the three kinds of input (3D, 2D grey, 2D RGB): the demo system test runs both interactive
# baselines on all nine modalities through the whole stack; here each case is 1 + K containers
KINDS_OF_INPUT = ("3DBox_CT_0001", "2DBox_X-Ray_0001", "2DBox_Endoscopy_0001")


@pytest.fixture
def micro_kinds(micro_testset, tmp_path) -> str:
    manifest = json.loads((micro_testset / "manifest.json").read_text())
    manifest["cases"] = [c for c in manifest["cases"] if c["id"] in KINDS_OF_INPUT]
    dest = tmp_path / "micro-kinds"
    for case in manifest["cases"]:
        for part in ("input", "gt"):
            (dest / case[part]["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(micro_testset / case[part]["path"], dest / case[part]["path"])
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return str(dest / "manifest.json")


def _run(wsettings, docker_client, image_id, *, testset, **track):
    track["kind"] = TrackKind(track.get("kind", "interactive"))
    track.setdefault("case_timeout_s", 60)
    track.setdefault("fail_fast_cases", 0)
    _sub, run_id = create_run(wsettings, testset=testset, image_id=image_id, **track)
    with ShardedHost(wsettings, docker=docker_client) as host:
        result = host.run(run_id)
    with session_scope(wsettings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.case_id)).all()
        left = s.scalar(select(CaseIteration.id).where(CaseIteration.run_id == run_id))
        run = s.get(Run, run_id)
        s.expunge_all()
    assert left is None, "iteration rows left behind"
    return result, run, rows


def _dscs(row) -> list[float]:
    return [e["dsc"] for e in row.iterations]


def test_interactive_run_on_each_kind_of_input_with_a_model_that_uses_clicks(wsettings, docker_client, images,
                                                                            micro_kinds):
    from scipy.integrate import cumulative_trapezoid

    result, run, rows = _run(wsettings, docker_client, images["click-refine"], testset=micro_kinds)
    assert result.state == RunState.succeeded, result.reason
    assert sorted(r.case_id for r in rows) == sorted(KINDS_OF_INPUT) and result.cases_total == 3
    for row in rows:
        assert row.status == CaseStatus.ok and row.scored and not row.budget_exceeded, row.reason
        assert [e["iteration"] for e in row.iterations] == list(range(K + 1))
        assert all(e["valid"] and e["status"] == "ok" and e["dsc"] is not None for e in row.iterations)
        d = _dscs(row)
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(d)), (row.case_id, d)  # a click never hurts
        assert row.dsc == pytest.approx(d[-1]) and row.nsd == pytest.approx(row.iterations[-1]["nsd"])
        # CVPR25_iter_eval.py: cumulative_trapezoid(dscs[-n_clicks:], np.arange(n_clicks))[-1]
        assert row.dsc_auc == pytest.approx(cumulative_trapezoid(np.array(d[-K:]), np.arange(K))[-1])
        assert row.runtime_s == pytest.approx(sum(e["runtime_s"] for e in row.iterations))
    mean = [np.mean([_dscs(r)[i] for r in rows]) for i in range(K + 1)]
    assert mean[-1] > mean[0], mean  # the mean DSC rises with clicks
    # the container saw the reference's keys from iteration 1 on (its last iteration's log)
    assert all("prev_pred" in r.stdout_tail and "clicks_order" in r.stdout_tail for r in rows)
    assert run.container_params["network_mode"] == "none" and run.container_params["cap_drop"] == ["ALL"]


def test_hostile_images_ignore_clicks_silent_iteration_and_budget(wsettings, docker_client, images, small_set):
    # ignores the clicks: scores recorded, flat, the AUC of a constant curve ((K-1) x DSC), no crash
    result, _run_row, rows = _run(wsettings, docker_client, images["click-ignore"], testset=small_set)
    assert result.state == RunState.succeeded, result.reason
    for row in rows:
        d = _dscs(row)
        assert row.status == CaseStatus.ok and d == pytest.approx([d[0]] * (K + 1))
        assert row.dsc_auc == pytest.approx((K - 1) * d[0])
    # writes nothing at iteration 3: iteration 3 keeps iteration 2's prediction and is marked; 4 and 5 go on
    result, _run_row, rows = _run(wsettings, docker_client, images["click-silent3"], testset=small_set)
    assert result.state == RunState.succeeded, result.reason
    for row in rows:
        it = row.iterations
        assert [e["valid"] for e in it] == [True, True, True, False, True, True], (row.case_id, it, row.stderr_tail)
        assert it[3]["status"] == "no_output" and "keeps the prediction of iteration 2" in it[3]["reason"]
        assert it[3]["dsc"] == it[2]["dsc"] and it[3]["nsd"] == it[2]["nsd"]
        assert row.status == CaseStatus.ok and "iteration 3" in row.reason and not row.budget_exceeded
    # over the class budget from iteration 1 (it sleeps 30 s; the budget is 3 s per class): stopped at the budget,
    # the case keeps iteration 0's prediction, the rest is not run, the case is marked
    result, _run_row, rows = _run(wsettings, docker_client, images["click-slow"], testset=small_set,
                                  class_budget_s=3.0)
    assert result.state == RunState.succeeded, result.reason
    for row in rows:
        it = row.iterations
        assert row.budget_exceeded and row.status == CaseStatus.ok, (row.case_id, row.reason)
        assert it[0]["valid"] and it[1]["status"] == "timeout" and it[1]["budget_exceeded"]
        assert [e["status"] for e in it[2:]] == ["not_run"] * (K - 1)
        assert _dscs(row) == pytest.approx([it[0]["dsc"]] * (K + 1)) and row.dsc == pytest.approx(it[0]["dsc"])
        assert it[1]["runtime_s"] < 30 and row.runtime_s <= 3.0 * 2 + 2.0  # stopped at the budget (<= 2 classes)


def test_point_prompt_track_runs_the_standard_path_with_the_manifests_points(wsettings, docker_client, images):
    from api.execution.testsets import load_testset
    from api.storage import Storage
    from evaluator.interactive import manifest_points

    result, _run_row, rows = _run(wsettings, docker_client, images["click-refine"], testset="micro", kind="main",
                                  prompt="point")
    assert result.state == RunState.succeeded, result.reason
    _m, _root, index = load_testset("micro", Storage.from_settings(wsettings))
    for row in rows:
        assert row.iterations is None and row.dsc_auc is None  # a single run per case
        assert row.status == CaseStatus.ok and 0 < row.dsc < 1, (row.case_id, row.reason)
        # the container saw the points and no boxes (its log lists the input's keys)
        assert "'points'" in row.stdout_tail and "'boxes'" not in row.stdout_tail, row.stdout_tail
        assert manifest_points(index[row.case_id])


def test_docker_run_timing_measures_the_whole_span(wsettings, docker_client, images, small_set, monkeypatch):
    """One run timed ``docker_run``: each case's recorded runtime is the whole create + start + wait + inspect +
    remove span, longer than the same container's start-to-exit (what ``sandbox.run_case`` measured; read by a spy
    on the real function). One run, case by case: two runs' medians differ by more than the create/remove time
    when the machine is busy."""
    import worker.interactive as wi

    container_s: dict[str, float] = {}
    real_run_case = wi.sb.run_case

    def spy(*args, **kwargs):
        case_run = real_run_case(*args, **kwargs)
        container_s[Path(kwargs["input_file"]).name] = case_run.runtime_s
        return case_run

    monkeypatch.setattr(wi.sb, "run_case", spy)
    _r, _run_row, whole = _run(wsettings, docker_client, images["correct"], testset=small_set, kind="main",
                               timing="docker_run")
    assert whole and all(r.status == CaseStatus.ok for r in whole)
    assert len(container_s) == len(whole), sorted(container_s)
    for row in whole:
        own = container_s[f"{row.case_id}.npz"]
        assert row.runtime_s > own > 0, (row.case_id, row.runtime_s, own)


def test_interactive_point_prompt_gets_points_then_clicks(wsettings, docker_client, images, small_set):
    """Prompt point on an interactive track: iteration 0 has the manifest's points (and no boxes), each later
    iteration the points as the first fg clicks plus the simulated ones; the model's DSC rises from its point voxels."""
    result, _run_row, rows = _run(wsettings, docker_client, images["click-refine"], testset=small_set,
                                  prompt="point", iterations=2)
    assert result.state == RunState.succeeded, result.reason
    for row in rows:
        assert row.status == CaseStatus.ok and [e["valid"] for e in row.iterations] == [True] * 3, row.reason
        d = _dscs(row)
        assert 0 < d[0] < d[-1] < 1, (row.case_id, d)  # one voxel per structure, then one more per click
        assert "'points'" in row.stdout_tail and "'boxes'" not in row.stdout_tail and "prev_pred" in row.stdout_tail
