"""Challenges and tracks: organizer writes with validation, public reads, leaderboard visibility changes."""

from __future__ import annotations

from tests.api_helpers import app, auth, client, db_settings, world  # noqa: F401 (fixtures)

SPEC = {
    "slug": "flare", "title": "FLARE", "description": "d", "demo": True,  # uses the built-in tiny set
    "tracks": [
        {"slug": "main", "title": "Main", "kind": "main", "testset": "tiny", "metric_profile": "cvpr24",
         "ranking_scheme": "aggregate_then_rank", "row_policy": "latest", "visibility": "hidden",
         "opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-02-01T00:00:00+02:00", "quota_per_day": 3,
         "queue": "cpu", "cpus": 2, "memory_mb": 8192, "gpus": 0, "case_timeout_s": 90, "total_timeout_s": 7200,
         "pids_limit": 128, "tmpfs_mb": 512, "allow_root": True, "repro_margin_dsc": 0.02, "repro_margin_nsd": 0.03},
        {"slug": "gpu", "kind": "booster", "queue": "gpu", "gpus": 1},
    ],
}


def test_create_and_read_challenge(client, world):
    r = client.post("/api/challenges", json=SPEC, headers=auth(world.token_org))
    assert r.status_code == 201, r.text
    body = r.json()
    main = body["tracks"][0]
    assert main["challenge"] == "flare" and main["metric_profile"] == "cvpr24" and main["allow_root"] is True
    assert main["closes_at"].startswith("2030-01-31T22:00:00") and main["is_open"] is False
    assert body["tracks"][1]["title"] == "gpu" and body["tracks"][1]["gpus"] == 1
    assert client.post("/api/challenges", json=SPEC, headers=auth(world.token_org)).status_code == 409
    # public reads, no token needed; a hidden track only for organizers
    listed = client.get("/api/challenges").json()
    assert {c["slug"]: c["tracks"] for c in listed}["flare"] == ["gpu"]
    listed = client.get("/api/challenges", headers=auth(world.token_org)).json()
    assert {c["slug"]: c["tracks"] for c in listed}["flare"] == ["main", "gpu"]
    assert client.get("/api/challenges/flare", headers=auth(world.token_org)).json()["tracks"][0]["visibility"] == "hidden"
    assert client.get("/api/challenges/flare/tracks/gpu").json()["queue"] == "gpu"
    r = client.get("/api/challenges/flare/tracks/nope")
    assert r.status_code == 404 and "no track 'nope'" in r.json()["message"]
    assert client.get("/api/challenges/nope").status_code == 404
    assert client.get("/api/challenges/nope/tracks/main").json()["message"].startswith("challenge 'nope' does not exist")


def test_validation(client, world):
    def bad(spec, needle):
        r = client.post("/api/challenges", json=spec, headers=auth(world.token_org))
        assert r.status_code == 422, (spec, r.text)
        assert needle in r.json()["message"], r.json()
    track = {"slug": "t"}
    bad({"slug": "Bad Slug", "title": "x"}, "slug")
    bad({"slug": "ok", "title": "x", "tracks": [track, track]}, "unique")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "kind": "lottery"}]}, "kind")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "gpus": 1}]}, "GPU queue")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "opens_at": "2030-02-01T00:00:00Z",
                                                 "closes_at": "2030-01-01T00:00:00Z"}]}, "closes_at")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "opens_at": "0001-01-01T00:00:00+05:00"}]}, "opens_at")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "case_timeout_s": 100, "total_timeout_s": 10}]}, "total_timeout_s")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "memory_mb": -1}]}, "memory_mb")
    bad({"slug": "ok", "title": "x", "tracks": [{**track, "cpus": 0}]}, "cpus")
    assert client.post("/api/challenges", json={"slug": "ok", "title": "x"}, headers=auth(world.token_a)).status_code == 403
    assert client.post("/api/challenges", json={"slug": "ok", "title": "x"}).status_code == 401


def test_patch_track_and_visibility(client, world, db_settings):
    h = auth(world.token_org)
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 1, "memory_mb": 4096,
                                                                 "closes_at": None}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["quota_per_day"] == 1 and r.json()["memory_mb"] == 4096 and r.json()["closes_at"] is None
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"title": None}, headers=h)
    assert r.status_code == 422 and "may not be null" in r.json()["message"]
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"gpus": 2}, headers=h)
    assert r.status_code == 422 and "GPU queue" in r.json()["message"]
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"opens_at": "2100-01-01T00:00:00Z"}, headers=h)
    assert r.status_code == 200 and r.json()["is_open"] is False
    assert client.patch("/api/challenges/cvpr24/tracks/main", json={"bogus": 1}, headers=h).status_code == 422
    assert client.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 9},
                        headers=auth(world.token_a)).status_code == 403

    r = client.post("/api/challenges/cvpr24/tracks/main/visibility", json={"visibility": "frozen"}, headers=h)
    assert r.status_code == 200 and r.json()["visibility"] == "frozen"
    frozen_at = r.json()["frozen_at"]
    assert frozen_at
    # freezing again keeps the original freeze time; publishing clears it
    again = client.post("/api/challenges/cvpr24/tracks/main/visibility", json={"visibility": "frozen"}, headers=h).json()
    assert again["frozen_at"] == frozen_at
    r = client.post("/api/challenges/cvpr24/tracks/main/visibility", json={"visibility": "public"}, headers=h)
    assert r.json()["visibility"] == "public" and r.json()["frozen_at"] is None
    assert client.post("/api/challenges/cvpr24/tracks/main/visibility", json={"visibility": "secret"},
                       headers=h).status_code == 422
    audit = client.get("/api/admin/audit", params={"target_type": "track"}, headers=h).json()
    assert [e["action"] for e in audit][:3] == ["track.visibility"] * 3
    assert any(e["action"] == "track.update" and e["details"]["changes"].get("quota_per_day") == 1 for e in audit)


def test_unknown_test_set_profile_or_bad_queue_is_refused_when_the_track_is_made(client, world, tmp_path):
    """A typo would otherwise fail every submission at run time: refuse it with the choices."""
    from evaluator.profiles import PROFILES

    base = {"slug": "typo", "title": "T", "tracks": [{"slug": "main"}]}
    known = "known profiles: " + ", ".join(p.id for p in PROFILES.values())  # every profile, cvpr25 included
    assert "cvpr99" not in PROFILES
    cases = [({"testset": "smal"}, "neither a built-in set (micro, small, tiny)"),
             ({"metric_profile": "cvpr99"}, f"unknown metric profile 'cvpr99'; {known}"),
             ({"queue": "no spaces"}, "queue: String should match pattern")]
    for fields, expected in cases:
        spec = {**base, "tracks": [{"slug": "main", **fields}]}
        r = client.post("/api/challenges", json=spec, headers=auth(world.token_org))
        assert r.status_code == 422 and expected in r.json()["message"], (fields, r.text)
    # a manifest file on the server is a valid test set
    from data_manifests import generate

    manifest = generate("micro", 2**40, tmp_path / "set")  # a private seed: a non-demo challenge may use it
    assert manifest.cases
    spec = {**base, "tracks": [{"slug": "main", "testset": str(tmp_path / "set" / "manifest.json")}]}
    r = client.post("/api/challenges", json=spec, headers=auth(world.token_org))
    assert r.status_code == 201, r.text
    r = client.patch("/api/challenges/typo/tracks/main", json={"testset": "nope"}, headers=auth(world.token_org))
    assert r.status_code == 422 and "neither a built-in set" in r.json()["message"]
