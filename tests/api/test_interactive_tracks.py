"""Track settings of interactive and point-prompt tracks (kind interactive; prompt, iterations, class_budget_s,
timing): defaults in one place, shown by the API and in the shard spec, validated with errors naming the fix, and
accepted by ``segarena admin apply``'s YAML."""

from __future__ import annotations

import json
from pathlib import Path

from api.challenges import track_settings as ts
from tests.api_helpers import app, auth, client, db_settings, world  # noqa: F401 (fixtures)


def _post(client, world, *tracks, slug="inter"):
    spec = {"slug": slug, "title": "Interactive", "demo": True, "tracks": list(tracks)}
    return client.post("/api/challenges", json=spec, headers=auth(world.token_org))


def test_defaults_shown_and_set(client, world):
    r = _post(client, world, {"slug": "clicks", "kind": "interactive"},
              {"slug": "fast", "kind": "interactive", "iterations": 3, "class_budget_s": 30, "timing": "docker_run",
               "prompt": "box"},
              {"slug": "main"})
    assert r.status_code == 201, r.text
    tracks = {t["slug"]: t for t in r.json()["tracks"]}
    assert tracks["clicks"]["kind"] == "interactive"
    assert (tracks["clicks"]["prompt"], tracks["clicks"]["iterations"], tracks["clicks"]["class_budget_s"],
            tracks["clicks"]["timing"]) == ("box", ts.DEFAULT_ITERATIONS, ts.DEFAULT_CLASS_BUDGET_S, "container")
    assert (ts.DEFAULT_ITERATIONS, ts.DEFAULT_CLASS_BUDGET_S) == (5, 90.0)  # CVPR25_iter_eval.py
    assert (tracks["fast"]["iterations"], tracks["fast"]["class_budget_s"], tracks["fast"]["timing"]) == \
        (3, 30.0, "docker_run")
    assert tracks["main"]["prompt"] == "box" and tracks["main"]["timing"] == "container"
    # public reads show them too
    public = client.get("/api/challenges/inter/tracks/fast").json()
    assert public["iterations"] == 3 and public["timing"] == "docker_run"
    # an update changes them, and keeps the rule
    r = client.patch("/api/challenges/inter/tracks/clicks", json={"iterations": 8, "timing": "docker_run"},
                     headers=auth(world.token_org))
    assert r.status_code == 200 and r.json()["iterations"] == 8, r.text
    r = client.patch("/api/challenges/inter/tracks/main", json={"iterations": 8}, headers=auth(world.token_org))
    assert r.status_code == 422 and "interactive tracks only" in r.json()["message"]


def test_validation_names_the_fix(client, world, tmp_path):
    def bad(track, needle):
        r = _post(client, world, {"slug": "t", **track}, slug="bad")
        assert r.status_code == 422, (track, r.text)
        assert needle in r.json()["message"], r.json()

    bad({"prompt": "clicks"}, "'box', 'point' or 'box+point'")
    bad({"timing": "wall"}, "'container' or 'docker_run'")
    bad({"kind": "interactive", "iterations": 0}, "iterations")
    bad({"kind": "interactive", "iterations": ts.MAX_ITERATIONS + 1}, "iterations")
    bad({"kind": "interactive", "class_budget_s": 0}, "class_budget_s")
    bad({"iterations": 3}, "apply to interactive tracks only (kind: interactive)")
    bad({"class_budget_s": 10}, "apply to interactive tracks only")
    # point prompts come from the manifest: a set without them is refused with the fix; a version-1 manifest is
    # accepted (a run upgrades it from the ground truth)
    from tests.worker_helpers import make_testset

    manifest = make_testset(tmp_path / "set")
    data = json.loads(Path(manifest).read_text())
    for case in data["cases"]:
        for label in case.get("labels", []):
            label.pop("point", None)
    Path(manifest).write_text(json.dumps(data))
    bad({"prompt": "point", "testset": str(manifest)}, "point prompt")
    bad({"prompt": "box+point", "testset": str(manifest)}, "point prompt")
    Path(manifest).write_text(json.dumps({**data, "schema_version": 1}))
    r = _post(client, world, {"slug": "t", "prompt": "point", "testset": str(manifest)}, slug="v1")
    assert r.status_code == 201, r.text
    # a point track on a set whose manifest has points (the built-in sets)
    r = _post(client, world, {"slug": "p", "prompt": "point"}, {"slug": "bp", "prompt": "box+point"}, slug="pts")
    assert r.status_code == 201 and [t["prompt"] for t in r.json()["tracks"]] == ["point", "box+point"], r.text


def test_admin_apply_yaml_accepts_the_settings(tmp_path):
    from segarena.admin import load_challenge_yaml

    p = tmp_path / "c.yaml"
    p.write_text("slug: c\ntitle: C\ntracks:\n  - slug: clicks\n    kind: interactive\n    prompt: box+point\n"
                 "    iterations: 5\n    class_budget_s: 90\n    timing: docker_run\n")
    track = load_challenge_yaml(p)["tracks"][0]
    assert (track["prompt"], track["iterations"], track["class_budget_s"], track["timing"]) == \
        ("box+point", 5, 90, "docker_run")
