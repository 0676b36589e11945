"""The hooks a primaa plugin can implement. Every hook name starts with ``primaa_``."""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from primaa.plugins.algorithm import AnyAlgorithm

PROJECT_NAME = "primaa"
#: Entry-point group that plugins declare in their ``pyproject.toml``.
ENTRY_POINT_GROUP = "primaa"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def primaa_algorithms() -> Iterable[AnyAlgorithm]:  # type: ignore[empty-body]
    """Return the algorithms this plugin provides.

    Called once per process at start-up (in the service and in every worker).
    Each algorithm name must be unique across all installed plugins.

    :return: algorithm instances (subclasses of :class:`primaa.Algorithm`
        or :class:`primaa.AsyncAlgorithm`)
    """
