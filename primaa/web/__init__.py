"""The web viewer's built files (``static/``): built from ``web/`` at the repository's top
level by ``npm run build`` and committed, so installing or running primaa needs no Node."""

from __future__ import annotations

from pathlib import Path
from typing import Final

STATIC_DIR: Final = Path(__file__).parent / "static"
