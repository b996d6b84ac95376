"""The participant CLI shows a cvpr24 undefined case (API ``dsc: null, undefined: true``) as "undefined", not as a
missing score (docs/interactive.md, "Undefined cases")."""

from __future__ import annotations

from segarena.participant import _case_line


def test_case_line_says_undefined() -> None:
    line = _case_line({"case_id": "2DBox_US_0001", "status": "ok", "dsc": None, "nsd": 0.0, "undefined": True,
                       "runtime_s": 0.5, "reason": "case 2DBox_US_0001: DSC undefined under cvpr24"})
    assert "DSC undefined NSD 0.0000" in line
    plain = _case_line({"case_id": "c", "status": "ok", "dsc": 0.5, "nsd": 0.25, "undefined": False})
    assert "DSC 0.5000 NSD 0.2500" in plain
