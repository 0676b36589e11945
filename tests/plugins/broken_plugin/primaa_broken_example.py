"""A plugin whose dependency is missing: importing it raises ModuleNotFoundError."""

from __future__ import annotations

from primaa_missing_dependency import Segmenter  # type: ignore[import-not-found]

from primaa import hookimpl


@hookimpl
def primaa_algorithms() -> list[Segmenter]:
    return [Segmenter()]
