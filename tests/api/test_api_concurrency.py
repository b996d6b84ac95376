"""Quotas hold under concurrency: 20 simultaneous uploads against a remaining quota of 1 → exactly 1 accepted."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.api_helpers import app, auth, db_settings, live, make_image_tar, submit, world  # noqa: F401 (fixtures)
from sqlalchemy import func, select

from api.db import session_scope
from api.models import Run, Submission


pytestmark = pytest.mark.dialects("sqlite", "postgres")  # locks, leases, claim order: the dialect matters


@pytest.mark.parametrize("resumable", [False, True], ids=["one-shot", "resumable"])
def test_twenty_uploads_against_a_quota_of_one(live, world, db_settings, resumable):
    org = auth(world.token_org)
    with httpx.Client(base_url=live.url, timeout=60) as http:
        http.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 2}, headers=org).raise_for_status()
        assert submit(http, world.token_a).status_code == 201  # one used: one remains
    if resumable:  # open sessions hold quota slots and are limited per team: let all twenty open, then lower
        db_settings.max_open_uploads_per_team = 20
        with httpx.Client(base_url=live.url, timeout=60) as http:
            http.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 21}, headers=org).raise_for_status()
    opened = threading.Barrier(21)
    archives = [make_image_tar(salt=f"race-{i}", layer_bytes=50_000) for i in range(20)]
    barrier = threading.Barrier(21 if resumable else 20)  # resumable: the main thread lowers the quota, then joins
    answers: list[tuple[int, dict]] = []
    tokens = [world.token_a, world.token_a2]

    def one(i: int):
        token = tokens[i % 2]
        with httpx.Client(base_url=live.url, timeout=120) as http:
            if resumable:
                data = archives[i]
                uid = http.post("/api/challenges/cvpr24/tracks/main/uploads",
                                json={"total_bytes": len(data)}, headers=auth(token)).json()["upload_id"]
                http.put(f"/api/uploads/{uid}", content=data,
                         headers={**auth(token), "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}).raise_for_status()
                opened.wait(timeout=120)
                barrier.wait(timeout=120)
                r = http.post(f"/api/uploads/{uid}/complete", headers=auth(token))
            else:
                barrier.wait()
                r = submit(http, token, data=archives[i])
            answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    if resumable:
        opened.wait(timeout=120)
        with httpx.Client(base_url=live.url, timeout=60) as http:
            http.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 2}, headers=org).raise_for_status()
        barrier.wait(timeout=120)
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in answers)
    assert codes == [201] + [429] * 19, answers
    assert all(body["code"] == "quota_exceeded" for code, body in answers if code == 429)
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 2
        assert s.scalar(select(func.count()).select_from(Run)) == 2
    stored = sorted(p.relative_to(db_settings.storage_dir).parts[0] for p in db_settings.storage_dir.rglob("*")
                    if p.is_file() and p.relative_to(db_settings.storage_dir).parts[0] != "testsets")  # the split's test set
    assert stored == ["images", "images"]  # refused uploads left nothing behind
