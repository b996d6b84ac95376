"""The demo's archive format: uncompressed to an API on this machine (CPU, not the link, is what is short), gzip
elsewhere (segarena/demo.py ``is_loopback``; the system test checks the demo's upload against a local API)."""

from __future__ import annotations

import pytest

from segarena.demo import is_loopback


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.8.9.10/", "http://localhost:8000/api",
                                 "http://LOCALHOST", "http://[::1]:8000"])
def test_this_machine_is_loopback(url):
    assert is_loopback(url)


@pytest.mark.parametrize("url", ["https://segarena.example.org", "http://10.0.0.5:8000", "http://192.168.1.2",
                                 "http://[2001:db8::1]/", "http://localhost.example.org", "not a url"])
def test_other_hosts_are_not(url):
    assert not is_loopback(url)


@pytest.mark.parametrize("compress", [True, False])
def test_save_archive_writes_a_docker_save_archive(docker_client, tmp_path, compress):
    """``save_archive``: gzip (level 1) or the plain tar of ``docker save``, written once (an existing archive is
    kept), never a partial file under the final name. A one-file image made by ``docker import`` keeps it quick."""
    import gzip
    import io
    import json
    import secrets
    import tarfile

    from segarena.demo import save_archive
    from tests.worker_helpers import import_tiny_image

    tag = f"segarena-test/demo-archive:{secrets.token_hex(4)}"
    import_tiny_image(docker_client, tag, {"hello.txt": b"hello"})
    try:
        dest = tmp_path / ("a.tar.gz" if compress else "a.tar")
        said: list[str] = []
        assert save_archive(docker_client, tag, dest, compress=compress, say=said.append) == dest
        raw = dest.read_bytes()
        assert (raw[:2] == b"\x1f\x8b") is compress
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw) if compress else raw)) as tf:
            manifest = json.load(tf.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == [tag]
        assert [p.name for p in tmp_path.iterdir()] == [dest.name] and said == [f"saving {tag} to {dest}"]
        mtime = dest.stat().st_mtime_ns
        save_archive(docker_client, tag, dest, compress=compress, say=said.append)
        assert dest.stat().st_mtime_ns == mtime and len(said) == 1, "an existing archive is kept"
    finally:
        docker_client.images.remove(tag, force=True)


def test_a_base_rebuilt_under_the_same_tag_gives_the_baselines_a_new_tag(docker_client):
    """A baseline's tag covers its base image's id, not only its name: after the local base is rebuilt (a new recipe,
    scripts/lib.sh BASE_IMAGE_VERSION) the demo and the tests build the baselines on the new base instead of reusing
    images of the old one. A base the engine lacks (to be pulled by the build) counts by its name."""
    import secrets

    from segarena.demo import baseline_tag
    from tests.worker_helpers import import_tiny_image

    repo = "segarena-test/rebased-base"
    tag = f"{repo}:{secrets.token_hex(4)}"
    try:
        import_tiny_image(docker_client, tag, {"recipe.txt": b"recipe 1"})
        first = baseline_tag(docker_client, "classic", tag)
        assert first.startswith("segarena/example-classic:")
        assert baseline_tag(docker_client, "classic", tag) == first, "the same base, sources and parameters"
        assert baseline_tag(docker_client, "classic", tag, params={"CLASSIC_SIGMA": "0"}) != first
        import_tiny_image(docker_client, tag, {"recipe.txt": b"recipe 2"})  # rebuilt under the same tag
        assert baseline_tag(docker_client, "classic", tag) != first
    finally:
        docker_client.images.remove(tag, force=True)
    absent = f"{repo}:absent-{secrets.token_hex(4)}"
    assert baseline_tag(docker_client, "classic", absent) == baseline_tag(docker_client, "classic", absent)
