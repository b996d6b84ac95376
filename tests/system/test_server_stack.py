"""What a fresh install serves on, and what every benchmark says it ran on.

``pip install 'segarena[server]'`` (and the platform image, and scripts/lib.sh's ``.[test]``) installs
``uvicorn[standard]``: the API runs on uvloop + httptools, about 8x the requests/s of asyncio + h11 on the public
board. Every ``bench/*.py`` prints the stack it ran on through ``bench/_stack.py``."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def test_the_server_extra_declares_uvicorn_standard_and_the_image_installs_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = project["optional-dependencies"]["server"]
    assert any(re.match(r"uvicorn\[standard\]", d) for d in server), server
    assert any("segarena[" in d and "server" in d for d in project["optional-dependencies"]["test"])
    assert re.search(r'pip install [^\n]*\.\[server\]', (ROOT / "Dockerfile").read_text())


def test_this_install_serves_on_uvloop_and_httptools():
    from segarena.serve import HeaderTimeoutH11Protocol, loop_name, protocol_class, stack_line

    assert importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"), \
        "uvloop/httptools missing: install the server stack (pip install -e '.[server]')"
    assert loop_name() == "uvloop"
    assert protocol_class() is not HeaderTimeoutH11Protocol  # auto = httptools, with the head timeout
    assert protocol_class("h11") is HeaderTimeoutH11Protocol
    line = stack_line()
    assert re.fullmatch(r"uvicorn \S+, loop uvloop \S+, http httptools \S+", line), line
    with pytest.raises(ValueError, match="unknown HTTP parser"):
        protocol_class("llhttp")


def test_the_shared_stack_line_names_python_server_loop_and_parser():
    proc = subprocess.run([sys.executable, str(BENCH / "_stack.py")], capture_output=True, text=True, timeout=60,
                          check=True)
    assert re.match(r"stack: Python 3\.\d+\.\d+ \(\w+\), uvicorn \S+, loop uvloop \S+, http httptools \S+; \d+ cores",
                    proc.stdout), proc.stdout


@pytest.mark.parametrize("bench", sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")))
def test_every_benchmark_prints_its_stack_from_the_shared_helper(bench):
    source = (BENCH / bench).read_text()
    assert re.search(r"^from _stack import .*\b(print_stack|server_stack)\b", source, re.M), \
        f"bench/{bench} must print the stack it ran on: from _stack import print_stack; print_stack(...) in main()"
    assert re.search(r"\b(print_stack|server_stack)\(", source), bench
