"""Challenge integrity: public test sets only in demo challenges; hidden tracks and off-board submissions leak nowhere.

One rule decides what anyone but the owning team and the organizers may see of a submission:
``api.leaderboard.public_submission_ids`` (the rows of the track's public board). Every test here failed
on f13a824.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from tests.api_helpers import (  # noqa: F401 (fixtures)
    app, auth, client, db_settings, finish_run, submit, world,
)
from fastapi.testclient import TestClient

from api import leaderboard as lb
from api.db import session_scope
from api.models import Feedback, Role, Submission, SubmissionState, TrackKind, Visibility
from leaderboard_web.seed import add_submission
from tests.leaderboard_helpers import add_member, arr, at, cases, make_app, make_challenge, make_team

ROOT = Path(__file__).resolve().parents[2]
FIX = "generate with a private seed"


# --------------------------------------------------------------------------- public test sets


def test_generated_manifest_records_whether_its_seed_is_public(tmp_path):
    from typer.testing import CliRunner

    from data_manifests import generate, load_manifest
    from data_manifests.cli import app as testset_app
    from data_manifests.schema import PRIVATE_SEED_MIN

    public = generate("micro", 0, tmp_path / "pub")
    assert public.generator.public_seed is True
    assert json.loads((ROOT / "data_manifests" / "sets" / "tiny.json").read_text())["generator"]["public_seed"] is True
    assert json.loads((ROOT / "data_manifests" / "sets" / "small.json").read_text())["generator"]["public_seed"] is True
    assert generate("micro", 12345, tmp_path / "guessable").generator.public_seed is True  # enumerable
    seed = PRIVATE_SEED_MIN + 987654321
    private = generate("micro", seed, tmp_path / "priv")
    assert private.generator.public_seed is False and private.generator.seed == seed
    text = (tmp_path / "priv" / "manifest.json").read_text()
    # the seed is recorded once (to regenerate it on the server), never in the id, version or description
    assert text.count(str(seed)) == 1 and private.id == "synthetic-micro-private"
    # the CLI draws a private seed when none is given, and warns about a public one
    r = CliRunner().invoke(testset_app, ["generate", "--size", "micro", "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    drawn = load_manifest(tmp_path / "cli" / "manifest.json", verify=False).generator
    assert drawn.public_seed is False and drawn.seed >= PRIVATE_SEED_MIN and "private seed" in r.output
    r = CliRunner().invoke(testset_app, ["generate", "--size", "micro", "--seed", "7", "--out", str(tmp_path / "s7")])
    assert r.exit_code == 0 and "seed 7 is public" in r.output


def test_public_test_sets_are_refused_outside_demo_challenges(client, world, tmp_path):
    from data_manifests import generate

    h = auth(world.token_org)

    def create(slug, testset=None, **extra):
        track = {"slug": "main"} if testset is None else {"slug": "main", "testset": testset}
        return client.post("/api/challenges", json={"slug": slug, "title": "T", "tracks": [track], **extra}, headers=h)

    pub = generate("micro", 0, tmp_path / "pub")
    assert pub.generator.public_seed
    old = json.loads((tmp_path / "pub" / "manifest.json").read_text())
    del old["generator"]["public_seed"]  # a manifest written before the field existed: decided by its seed
    (tmp_path / "old.json").write_text(json.dumps(old))
    generate("micro", 2**40 + 17, tmp_path / "priv")
    for slug, testset, needle in [("a", "tiny", "built-in synthetic set"), ("b", "small", "built-in synthetic set"),
                                  ("f", "micro", "built-in synthetic set"),
                                  ("c", None, "built-in synthetic set"),  # the default test set is tiny
                                  ("d", str(tmp_path / "pub" / "manifest.json"), "public seed (0)"),
                                  ("e", str(tmp_path / "old.json"), "public seed (0)")]:
        r = create(slug, testset)
        assert r.status_code == 422, (slug, r.text)
        body = r.json()
        assert body["code"] == "invalid_request" and needle in body["message"] and FIX in body["message"], body
        assert "segarena testset generate" in body["message"] and "import real data" in body["message"]
    r = create("real", str(tmp_path / "priv" / "manifest.json"))
    assert r.status_code == 201, r.text
    # track update: changing the test set to a public one is refused the same way; other changes are not
    for testset in ("tiny", str(tmp_path / "pub" / "manifest.json")):
        r = client.patch("/api/challenges/real/tracks/main", json={"testset": testset}, headers=h)
        assert r.status_code == 422 and FIX in r.json()["message"], r.text
    assert client.patch("/api/challenges/real/tracks/main", json={"quota_per_day": 2}, headers=h).status_code == 200
    # a demo challenge may use them
    assert create("show", "tiny", demo=True).status_code == 201
    assert client.patch("/api/challenges/show/tracks/main", json={"testset": "small"}, headers=h).status_code == 200


def test_challenge_yaml_without_demo_refuses_a_builtin_set(tmp_path):
    """`segarena admin apply` posts what load_challenge_yaml reads: demo travels, and without it small is refused."""
    from pydantic import ValidationError

    from api.challenges.schemas import ChallengeCreate
    from segarena.admin import load_challenge_yaml

    example = ROOT / "examples" / "challenge.yaml"
    spec = load_challenge_yaml(example)
    assert spec["demo"] is True
    ChallengeCreate(**spec)
    stripped = tmp_path / "real.yaml"
    stripped.write_text(re.sub(r"(?m)^demo: true.*$", "", example.read_text()))
    spec = load_challenge_yaml(stripped)
    assert "demo" not in spec
    with pytest.raises(ValidationError, match=FIX):
        ChallengeCreate(**spec)


# --------------------------------------------------------------------------- hidden tracks in the challenge JSON


def test_hidden_tracks_and_test_set_paths_are_for_organizers_only(client, world):
    h = auth(world.token_org)
    assert client.post("/api/challenges/cvpr24/tracks/booster/visibility", json={"visibility": "hidden"},
                       headers=h).status_code == 200
    for who in (None, world.token_a):
        hdr = auth(who) if who else {}
        listed = {c["slug"]: c["tracks"] for c in client.get("/api/challenges", headers=hdr).json()}
        assert "booster" not in listed["cvpr24"] and "main" in listed["cvpr24"]
        ch = client.get("/api/challenges/cvpr24", headers=hdr).json()
        assert "booster" not in [t["slug"] for t in ch["tracks"]]
        assert all(t["testset"] is None for t in ch["tracks"]), ch  # a server path: organizers only
        assert client.get("/api/challenges/cvpr24/tracks/main", headers=hdr).json()["testset"] is None
        hidden = client.get("/api/challenges/cvpr24/tracks/booster", headers=hdr)
        missing = client.get("/api/challenges/cvpr24/tracks/nosuch", headers=hdr)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["message"].replace("booster", "X") == missing.json()["message"].replace("nosuch", "X")
        assert "tiny" not in client.get("/api/challenges/cvpr24", headers=hdr).text
    ch = client.get("/api/challenges/cvpr24", headers=h).json()
    assert {t["slug"]: t["testset"] for t in ch["tracks"]}["booster"] == "tiny"
    assert client.get("/api/challenges/cvpr24/tracks/booster", headers=h).json()["visibility"] == "hidden"


# --------------------------------------------------------------------------- reproduces


def test_reproduces_names_only_a_submission_on_a_public_board(client, world, db_settings):
    url = db_settings.database_url

    def answer(sid):
        r = submit(client, world.token_b, track="repro", reproduces=sid)
        return r.status_code, r.json()["code"], r.json()["message"].replace(str(sid), "N")

    nowhere = answer(987654)
    assert nowhere[0] == 422
    target = submit(client, world.token_a).json()["id"]
    finish_run(url, target, state="succeeded", dsc=0.8, nsd=0.8)
    worse = submit(client, world.token_a).json()["id"]  # not the team's row on the board (row policy: best)
    finish_run(url, worse, state="succeeded", dsc=0.5, nsd=0.5)
    failed = submit(client, world.token_a).json()["id"]
    finish_run(url, failed, state="failed", reason="every case failed")
    for sid in (worse, failed):
        assert answer(sid) == nowhere, sid
    # the listed one: refused while its board is hidden or it is excluded, the same answer as a missing id
    h = auth(world.token_org)
    client.post("/api/challenges/cvpr24/tracks/main/visibility", json={"visibility": "hidden"}, headers=h)
    assert answer(target) == nowhere
    client.post("/api/challenges/cvpr24/tracks/main/visibility", json={"visibility": "public"}, headers=h)
    with session_scope(url) as s:
        s.get(Submission, target).excluded = True
    assert answer(target) == nowhere
    with session_scope(url) as s:
        s.get(Submission, target).excluded = False
    r = submit(client, world.token_b, track="repro", reproduces=target)
    assert r.status_code == 201 and r.json()["reproduces_id"] == target, r.text


# --------------------------------------------------------------------------- pages and boards (leaderboard helpers)

ORG = "sa_visibility-organizer"
OWNER = "sa_visibility-owner-of-A"
OTHER = "sa_visibility-other-team"


@pytest.fixture
def page_app(settings):
    return make_app(settings)


def _board_world(url, **main_kw):
    """Track main: teams A (best row + a worse one), B; plus A's queued, failed and B's excluded submissions."""
    cs = cases(4)
    ids = {}
    with session_scope(url) as s:
        trs = make_challenge(s, tracks={"main": main_kw, "repro": {"kind": TrackKind.reproducibility}})
        a, b, r = make_team(s, "A"), make_team(s, "B"), make_team(s, "R")
        ids["teams"] = (a.id, b.id)
        d = arr(0.8, 0.8, 0.8, 0.8)
        ids["best"] = add_submission(s, track=trs["main"], team=a, cases=cs, dsc=d, nsd=d, runtime=np.ones(4),
                                     label="best", created_at=at(0)).id
        ids["worse"] = add_submission(s, track=trs["main"], team=a, cases=cs, dsc=d - 0.3, nsd=d - 0.3,
                                      runtime=np.ones(4), label="worse", created_at=at(1)).id
        ids["b"] = add_submission(s, track=trs["main"], team=b, cases=cs, dsc=d - 0.1, nsd=d - 0.1,
                                  runtime=np.ones(4), label="b", created_at=at(2)).id
        ids["queued"] = add_submission(s, track=trs["main"], team=a, cases=[], dsc=arr(), nsd=arr(), runtime=arr(),
                                       label="queued", state=SubmissionState.queued, created_at=at(3)).id
        failed = add_submission(s, track=trs["main"], team=a, cases=[], dsc=arr(), nsd=arr(), runtime=arr(),
                                label="failed", state=SubmissionState.failed, created_at=at(4))
        failed.reason = "SECRET-REASON crashed on case 3"
        ids["failed"] = failed.id
        ids["excluded"] = add_submission(s, track=trs["main"], team=b, cases=cs, dsc=d, nsd=d, runtime=np.ones(4),
                                         label="excl", excluded=True, exclusion_reason="x", created_at=at(5)).id
        ids["repro_track"] = trs["repro"].id
        ids["repro_team"] = r.id
    add_member(url, role=Role.organizer, token=ORG)
    add_member(url, role=Role.participant, token=OWNER, team_id=ids["teams"][0])
    add_member(url, role=Role.participant, token=OTHER, team_id=ids["teams"][1])
    return ids, cs


def test_one_predicate_lists_exactly_the_public_rows(page_app, settings):  # page_app: the schema
    url = settings.database_url
    ids, _ = _board_world(url)
    with session_scope(url) as s:
        track = s.get(Submission, ids["best"]).track
        board = lb.build_board(s, track)
        assert lb.public_submission_ids(s, track) == {r.submission_id for r in board.rows} == {ids["best"], ids["b"]}
        track.visibility = Visibility.hidden
        assert lb.public_submission_ids(s, track) == set()


def test_submission_pages_check_visibility_like_the_board(page_app, settings):
    url = settings.database_url
    ids, _ = _board_world(url)
    with TestClient(page_app) as c:
        missing = c.get("/submissions/99999")
        assert missing.status_code == 404

        def same_as_missing(r, sid):
            return r.status_code == 404 and r.text.replace(f"#{sid}", "#N") == missing.text.replace("#99999", "#N")

        for who in (None, OTHER):
            hdr = {"Authorization": f"Bearer {who}"} if who else {}
            for key in ("worse", "queued", "failed", "excluded"):
                r = c.get(f"/submissions/{ids[key]}", headers=hdr)
                if who == OTHER and key == "excluded":
                    assert r.status_code == 200  # B's own
                    continue
                assert r.status_code == 404 and "SECRET-REASON" not in r.text, (who, key)
                if who is None:
                    assert same_as_missing(r, ids[key]), key
            assert c.get(f"/submissions/{ids['best']}", headers=hdr).status_code == 200
        # the owning team and the organizers always
        for who in (OWNER, ORG):
            for key in ("worse", "queued", "failed"):
                assert c.get(f"/submissions/{ids[key]}", headers={"Authorization": f"Bearer {who}"}).status_code == 200
        assert "SECRET-REASON" in c.get(f"/submissions/{ids['failed']}", headers={"Authorization": f"Bearer {OWNER}"}).text
        # the API: another team's submission is the same 404 as a missing one
        r = c.get(f"/api/submissions/{ids['queued']}", headers={"Authorization": f"Bearer {OTHER}"})
        m = c.get("/api/submissions/99999", headers={"Authorization": f"Bearer {OTHER}"})
        assert r.status_code == m.status_code == 404


def test_reproducibility_board_shows_only_public_originals(page_app, settings):
    url = settings.database_url
    ids, cs = _board_world(url)
    d = arr(0.8, 0.8, 0.8, 0.8)
    with session_scope(url) as s:
        repro = s.get(Submission, ids["best"]).track.challenge.tracks
        rtrack = next(t for t in repro if t.kind == TrackKind.reproducibility)
        for t in repro:  # per-case comparisons are public only on full-feedback tracks (test_feedback_policy.py)
            t.feedback = Feedback.full
        for i, key in enumerate(("best", "worse", "excluded")):
            add_submission(s, track=rtrack, team=make_team(s, f"R-{key}"), cases=cs, dsc=d, nsd=d, runtime=np.ones(4),
                           label=f"of-{key}", reproduces_id=ids[key], created_at=at(10 + i))

    def rows(client, **hdr):
        lb.invalidate()
        body = client.get("/api/challenges/c1/tracks/repro/leaderboard", headers=hdr).json()
        return {r["label"]: r for r in body["rows"]}

    with TestClient(page_app) as c:
        pub = rows(c)
        assert pub["of-best"]["reproduces_id"] == ids["best"] and pub["of-best"]["details"]["cases"]
        for label in ("of-worse", "of-excluded"):
            assert pub[label]["details"] is None and pub[label]["reproduces"] == "—", pub[label]
            assert pub[label].get("reproduces_id") is None and pub[label]["delta_dsc"] is None
        org = rows(c, Authorization=f"Bearer {ORG}")
        assert org["of-worse"]["reproduces_id"] == ids["worse"] and org["of-excluded"]["details"]["cases"]
        # hiding the main track, or freezing it before the original, takes the original off the public board
        with session_scope(url) as s:
            s.get(Submission, ids["best"]).track.visibility = Visibility.hidden
        pub = rows(c)
        assert pub["of-best"]["details"] is None and "A" not in pub["of-best"]["reproduces"]
        assert cs[0][0] not in c.get("/challenges/c1/tracks/repro").text  # no per-case rows of an original
        with session_scope(url) as s:
            t = s.get(Submission, ids["best"]).track
            t.visibility, t.frozen_at = Visibility.public, at(-1)
        assert rows(c)["of-best"]["details"] is None
        assert rows(c, Authorization=f"Bearer {ORG}")["of-best"]["details"]["cases"]


def test_overview_counts_what_the_public_board_counts(page_app, settings):
    url = settings.database_url
    ids, cs = _board_world(url, visibility=Visibility.frozen, closes_at=at(10))
    with session_scope(url) as s:
        track = s.get(Submission, ids["best"]).track
        b = s.get(Submission, ids["b"]).team
        late = add_submission(s, track=track, team=b, cases=cs, dsc=np.ones(4), nsd=np.ones(4), runtime=np.ones(4),
                              label="after the freeze", created_at=at(11))
        late_id = late.id
    with TestClient(page_app) as c:
        page = c.get("/challenges/c1").text
        board = c.get("/api/challenges/c1/tracks/main/leaderboard").json()
        assert late_id not in [r["submission_id"] for r in board["rows"]]
        # succeeded, not excluded, before the freeze: best, worse (A) and b; not queued, failed, excluded, late
        assert board["n_submissions"] == 3
        assert re.search(r"\b3 submissions\b", page), page
        assert c.get(f"/submissions/{late_id}").status_code == 404
