"""The test command's schedule (scripts/test.sh with tests/conftest.py): every file a lane or a directory marker names
exists (a renamed file would silently leave its lane, and the long files would again all wait at once), and the test
command starts one xdist process per lane on top of one per core."""

from __future__ import annotations

import re

from tests.conftest import DIRECTORY_MARKERS, LANES, ROOT


def test_every_file_named_by_the_schedule_exists():
    for path in [*LANES, *DIRECTORY_MARKERS]:
        assert (ROOT / path).exists(), f"tests/conftest.py names {path}, which does not exist"


def test_the_test_command_starts_a_process_per_lane():
    script = (ROOT / "scripts" / "test.sh").read_text()
    found = re.search(r"^lanes=(\d+)", script, re.MULTILINE)
    assert found, "scripts/test.sh sets lanes=N"
    assert int(found.group(1)) == len(set(LANES.values())), "lanes= in scripts/test.sh must match tests/conftest.py"
    assert "--dist loadfile" in script and "--no-loadscope-reorder" in script
