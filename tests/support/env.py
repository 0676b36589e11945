"""The environment of a primaa (or Dask) process a test starts, as an operator would start it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its ``PRIMAA_*``, with ``env``, and this checkout
    first on ``PYTHONPATH`` so that the test plugins (``tests.support...``) import."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child.get("PYTHONPATH")]))
    child.update(env or {})
    return child
