"""Whole-slide images: lazy reads at any resolution.

This package runs inside worker processes: it imports no web framework, no
database and nothing of the jobs core.
"""

from __future__ import annotations

from primaa.imaging.slides.base import RGB, Level, Slide, SlideError
from primaa.imaging.slides.opener import open_slide

__all__ = ["RGB", "Level", "Slide", "SlideError", "open_slide"]
