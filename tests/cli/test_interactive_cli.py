"""The CLI shows interactive and prompt/timing settings: ``segarena leaderboard`` names them under the table."""

from __future__ import annotations

from segarena.participant import _caption


def test_leaderboard_caption_names_interactive_prompt_and_timing():
    cap = _caption({"scheme": "rank_then_aggregate", "iterations": 5, "prompt": "box", "timing": "docker_run",
                    "timing_label": "whole docker run --rm span (create + start + remove), as the 2024 reference"})
    assert "interactive: box prompt, then 5 clicks" in cap and "timing: whole docker run --rm span" in cap
    cap = _caption({"scheme": "rank_then_aggregate", "iterations": None, "prompt": "point", "timing": "container"})
    assert "prompt: point" in cap and "interactive" not in cap and "timing: container" in cap
