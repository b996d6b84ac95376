"""The local base image's recipe check (scripts/lib.sh ``base_image_current``, used by both commands and
scripts/build-base-image.sh): the default tag is rebuilt when its label names an older recipe (or none, as before
version 2), and an image SegArena did not build (``SEGARENA_BASE_IMAGE=python:3.11-slim``) is taken as it is."""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest

from tests.conftest import ROOT
from tests.worker_helpers import import_tiny_image

pytestmark = [pytest.mark.docker]

LIB = ROOT / "scripts" / "lib.sh"


def _version() -> str:
    found = re.search(r"^BASE_IMAGE_VERSION=(\d+)$", LIB.read_text(), re.MULTILINE)
    assert found, "scripts/lib.sh sets BASE_IMAGE_VERSION=N"
    return found.group(1)


def _current(tag: str, default: str) -> bool:
    """``base_image_current TAG`` with ``default`` as the default base image's tag."""
    script = f'source "{LIB}"; DEFAULT_BASE_IMAGE="{default}"; base_image_current "{tag}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, check=False).returncode == 0


def _image(docker_client, tag: str, label: str | None) -> None:
    """An empty image tagged ``tag`` with the recipe label ``label`` (none: unlabelled)."""
    import_tiny_image(docker_client, tag, labels={"org.segarena.base-version": label} if label else None)


def test_an_older_recipe_of_the_default_tag_is_rebuilt_and_a_foreign_image_is_kept(docker_client, base_image):
    version = _version()
    assert _current(base_image, base_image), f"{base_image} (built by the test command) is of recipe {version}"
    repo = f"segarena-test/base-{uuid.uuid4().hex[:8]}"
    made = {name: f"{repo}:{name}" for name in ("old", "unlabelled", "now")}
    try:
        _image(docker_client, made["old"], str(int(version) - 1))
        _image(docker_client, made["unlabelled"], None)
        _image(docker_client, made["now"], version)
        assert not _current(made["old"], made["old"])  # the default tag, an older recipe: rebuild
        assert not _current(made["unlabelled"], made["unlabelled"])  # built before the label existed: rebuild
        assert _current(made["now"], made["now"])
        assert _current(made["unlabelled"], "segarena/base:bookworm-slim")  # someone's python:3.11-slim: keep
        assert not _current(f"{repo}:absent", f"{repo}:absent")
    finally:
        for tag in made.values():
            docker_client.images.remove(tag, force=True)
