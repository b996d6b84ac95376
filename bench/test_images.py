"""Benchmark (issue 15): the time to build every test image on an engine that has the base image but none of the
test images' layers.

    .venv/bin/python bench/test_images.py [--base-image segarena/base:bookworm-slim]

Every behaviour of tests/behaviours.py is built from the one build context tests/images/behaviour, copied to a
temporary directory with a random comment line appended to each script: no layer of an earlier build applies, while
the behaviours of this measurement share their common layers with each other, as on a fresh engine. The images are
tagged ``segarena-bench/test-images-<salt>:<n>`` and removed at the end. Prints one line: images, seconds.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _stack import print_stack  # bench/ is the script directory, first on sys.path

from api.settings import DEFAULT_BASE_IMAGE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-image", default=os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE))
    args = parser.parse_args()

    print_stack("docker")  # the stack this figure comes from (bench/_stack.py)
    import docker

    from tests.behaviours import BEHAVIOURS, build_args, build_target
    from tests.worker_helpers import BEHAVIOUR_DIR

    client = docker.from_env(timeout=600)
    salt = secrets.token_hex(8)
    tags: list[str] = []
    with tempfile.TemporaryDirectory(prefix="segarena-bench-images-") as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(BEHAVIOUR_DIR, ctx, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for p in ctx.rglob("*"):
            if p.is_file() and p.suffix in (".py", ".sh"):
                p.write_text(p.read_text() + f"\n# salt {salt}\n")
        started = time.monotonic()
        try:
            for i, name in enumerate(BEHAVIOURS):
                tag = f"segarena-bench/test-images-{salt}:{i}"
                client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True, target=build_target(name),
                                    buildargs={"BASE_IMAGE": args.base_image, **build_args(name)},
                                    network_mode="none")
                tags.append(tag)
            seconds = time.monotonic() - started
        finally:
            for tag in tags:
                client.images.remove(tag, force=True)
    print(f"test images built on a fresh engine (base {args.base_image}): {len(tags)} behaviours, {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
