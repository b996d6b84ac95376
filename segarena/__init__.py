"""SegArena: challenge evaluation platform for promptable medical image segmentation."""

__version__ = "0.1.0"
