"""The streaming docker-save archive check (no DB): what it accepts, what it refuses, and that it agrees with Docker."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib

import pytest
from tests.api_helpers import image_id_of, make_image_tar

from api.submissions.archive import ArchiveError, ArchiveInspector, inspect_file


def _inspect(data: bytes, step: int = 65536, **kw):
    inspector = ArchiveInspector(**kw)
    for i in range(0, len(data), step):
        inspector.feed(data[i : i + step])
    return inspector.finish()


@pytest.mark.parametrize("layout", ["legacy", "oci"])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("step", [1, 511, 513, 1 << 20])
def test_accepts_valid_archives_in_any_chunking(layout, gz, step):
    data = make_image_tar(layout=layout, gzip=gz, tag="team/model:v1", user="1000:1000", layer_bytes=3000)
    info = _inspect(data, step)
    assert info.image_id == image_id_of(data)
    assert info.image_tag == "team/model:v1"
    assert info.user == "1000:1000"
    assert info.architecture == "amd64" and info.os == "linux"
    assert info.compressed is gz
    assert info.layers == 1


def test_image_id_depends_on_config_not_on_compression():
    plain, packed = make_image_tar(salt="s"), make_image_tar(salt="s", gzip=True)
    assert _inspect(plain).image_id == _inspect(packed).image_id
    assert _inspect(make_image_tar(salt="t")).image_id != _inspect(plain).image_id


def test_concatenated_gzip_members_and_trailing_zeros():
    raw = make_image_tar()
    half = len(raw) // 2
    data = gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 100
    assert _inspect(data, 100).image_id == image_id_of(raw)


def _symlink(name, target):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        tar.addfile(info)
    return add


def _hardlink(name, target):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        tar.addfile(info)
    return add


def _member(name, kind=tarfile.REGTYPE, data=b""):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if data else None)
    return add


@pytest.mark.parametrize("kwargs, message", [
    (dict(tag=None), "0 tags"),
    (dict(tag=["a/b:1", "a/b:2"]), "2 tags"),
    (dict(arch="arm64"), "arm64"),
    (dict(os_name="windows"), "windows"),
    (dict(manifest=[]), "0 images"),
    (dict(manifest={"Config": "x"}), "no images"),
    (dict(manifest=[{"Config": "nope.json", "RepoTags": ["a:b"], "Layers": []}]), "not in the archive"),
    (dict(manifest=[{"Config": "../x.json", "RepoTags": ["a:b"], "Layers": []}]), "'..'"),
    (dict(config_override=b"{not json"), "not valid JSON"),
    (dict(config_override=b"[1, 2]"), "not a JSON object"),
    (dict(extra_members=_member("/etc/passwd")), "absolute path"),
    (dict(extra_members=_member("a/../../etc/passwd")), "'..'"),
    (dict(extra_members=_symlink("a/evil", "../../etc/shadow")), "outside the archive"),
    (dict(extra_members=_symlink("evil", "/etc/shadow")), "outside the archive"),
    (dict(extra_members=_hardlink("evil", "../outside")), "outside the archive"),
    (dict(extra_members=_member("dev", tarfile.CHRTYPE)), "device"),
    (dict(extra_members=_member("fifo", tarfile.FIFOTYPE)), "device or pipe"),
    (dict(extra_members=_member("manifest.json", data=b"[]")), "appears twice"),
])
def test_refuses_bad_archives_with_a_reason(kwargs, message):
    for gz in (False, True):
        with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(".", r"\.")):
            _inspect(make_image_tar(gzip=gz, **kwargs), 700)


def test_config_digest_must_match_its_name():
    raw = make_image_tar()
    # rewrite the manifest to point at a layer-dir file whose name is a different 64-hex digest
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = tar.extractfile(manifest[0]["Config"]).read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        fake = "0" * 64 + ".json"
        info = tarfile.TarInfo(fake)
        info.size = len(config)
        out.addfile(info, io.BytesIO(config))
        body = json.dumps([{"Config": fake, "RepoTags": ["a:b"], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        out.addfile(info, io.BytesIO(body))
    with pytest.raises(ArchiveError, match="does not match its digest"):
        _inspect(buf.getvalue())


def test_links_inside_the_archive_are_fine():
    # docker save (legacy) writes a shared layer as a symlink ../<other>/layer.tar
    def links(tar):
        _symlink("dup/layer.tar", "../somewhere/layer.tar")(tar)
        _member("somewhere/layer.tar", data=b"x" * 10)(tar)
    info = _inspect(make_image_tar(extra_members=links))
    assert info.image_tag == "team/model:latest"


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"x", "empty or too short"),
    (b"hello world, not an archive" * 40, "not a tar archive"),
    (b"\x1f\x8b" + b"garbage" * 100, "gzip stream is corrupt"),
])
def test_refuses_non_archives(data, message):
    with pytest.raises(ArchiveError, match=message):
        _inspect(data)


def test_truncated_archives_are_refused():
    raw = make_image_tar(layer_bytes=20000)
    with pytest.raises(ArchiveError, match="truncated"):
        _inspect(raw[: len(raw) // 2])
    packed = gzip.compress(raw)
    with pytest.raises(ArchiveError, match="truncated"):
        _inspect(packed[: len(packed) - 30])


def test_missing_manifest():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _member("hello.txt", data=b"hi")(tar)
    with pytest.raises(ArchiveError, match="manifest.json is missing"):
        _inspect(buf.getvalue())


def test_gzip_bomb_is_stopped_without_unpacking_it_all():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    # a tar header of a huge member, then 200 MB of zeros: compresses to ~200 kB
    info = tarfile.TarInfo("big.bin")
    info.size = 200 << 20
    data = bomb.compress(info.tobuf()) + bomb.compress(b"\0" * (200 << 20)) + bomb.flush()
    assert len(data) < 1 << 20
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        _inspect(data, max_uncompressed=50 << 20)


def test_inspect_file_reads_back_a_large_config(tmp_path):
    """A config over the in-memory budget is read back from the stored file instead."""
    big = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "app"},
                      "history": [{"created_by": "x" * 1000}] * 1500}).encode()
    assert len(big) > 1 << 20
    path = tmp_path / "a.tar"
    path.write_bytes(make_image_tar(config_override=big))
    info = inspect_file(path)
    assert info.user == "app"
    assert info.image_id == image_id_of(path.read_bytes())


@pytest.mark.docker
def test_agrees_with_docker_on_a_real_docker_save(docker_client, tmp_path, unique):
    """Oracle: the Docker engine. Our image id is what ``docker load`` reports, for a real ``docker save``."""
    root = io.BytesIO()
    with tarfile.open(fileobj=root, mode="w") as tar:
        _member("workspace/predict.sh", data=b"echo hi\n")(tar)
    repo = f"segarena-test/archive-{unique}"
    docker_client.api.import_image_from_data(root.getvalue(), repository=repo, tag="v1")
    try:
        image = docker_client.images.get(f"{repo}:v1")
        saved = b"".join(image.save(named=True))
        info = _inspect(saved, 4096)
        assert info.image_id == image.id
        assert info.image_tag == f"{repo}:v1"
        assert _inspect(gzip.compress(saved, 1)).image_id == image.id
    finally:
        docker_client.images.remove(f"{repo}:v1", force=True)


@pytest.mark.docker
def test_helper_archives_load_in_docker(docker_client):
    """The in-memory archives of the test helpers are real: ``docker load`` takes them with the same id."""
    data = make_image_tar(tag="segarena-test/helper:v1", salt="docker-load")
    try:
        images = docker_client.images.load(data)
        assert images[0].id == image_id_of(data) == _inspect(data).image_id
    finally:
        docker_client.images.remove("segarena-test/helper:v1", force=True)
