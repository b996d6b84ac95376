"""SegArena: challenge evaluation platform for promptable medical image segmentation."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version comes from the installed package's metadata (pyproject.toml), read on first use only.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("segarena")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
