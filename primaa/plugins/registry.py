"""Loads plugins through the ``primaa`` entry-point group and indexes their algorithms.

Built-in algorithms come through the same door as third-party ones. A plugin
that fails to import or to register is recorded as broken and the rest load;
two plugins offering the same algorithm name is a start-up error naming both.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import cast

import pluggy
import structlog

from primaa.plugins import hookspecs
from primaa.plugins.algorithm import Algorithm, AnyAlgorithm, AsyncAlgorithm

log = structlog.get_logger(__name__)


class DuplicateAlgorithm(Exception):
    """Two plugins register the same algorithm name."""


@dataclasses.dataclass(frozen=True, slots=True)
class BrokenPlugin:
    name: str
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class RegisteredAlgorithm:
    algorithm: AnyAlgorithm
    #: Entry-point name of the plugin that provided it.
    plugin: str


@dataclasses.dataclass(frozen=True)
class AlgorithmRegistry:
    """The algorithms of all loaded plugins, by name, and the plugins that broke."""

    algorithms: Mapping[str, RegisteredAlgorithm]
    broken: tuple[BrokenPlugin, ...] = ()

    def get(self, name: str) -> AnyAlgorithm | None:
        entry = self.algorithms.get(name)
        return entry.algorithm if entry else None

    def __contains__(self, name: object) -> bool:
        return name in self.algorithms

    def names(self) -> list[str]:
        return sorted(self.algorithms)


def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(
    *,
    disabled: Iterable[str] = (),
    modules: Iterable[str] = (),
    extra_plugins: Mapping[str, ModuleType | object] | None = None,
) -> AlgorithmRegistry:
    """Load every ``primaa`` entry point (minus ``disabled``) and collect algorithms.

    ``modules`` names more plugin modules by import path (the ``plugins``
    setting); worker processes load them too. ``extra_plugins`` registers plugin
    objects directly, by name (for embedding); both go through the same checks
    as entry points.
    """
    pm = get_plugin_manager()
    broken: list[BrokenPlugin] = []
    skip = set(disabled)
    for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        if ep.name in skip or pm.has_plugin(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:
            broken.append(_broken(ep.name, exc))
    for module in modules:
        if pm.has_plugin(module):
            continue
        try:
            pm.register(importlib.import_module(module), name=module)
        except Exception as exc:
            broken.append(_broken(module, exc))
    for name, plugin in (extra_plugins or {}).items():
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            broken.append(_broken(name, exc))
    _drop_invalid_hooks(pm, broken)

    algorithms: dict[str, RegisteredAlgorithm] = {}
    for impl in pm.hook.primaa_algorithms.get_hookimpls():
        try:
            hook = cast(Callable[[], Iterable[object]], impl.function)
            provided = [_checked(algorithm) for algorithm in hook()]
        except Exception as exc:
            broken.append(_broken(impl.plugin_name, exc))
            continue
        for algorithm in provided:
            other = algorithms.get(algorithm.name)
            if other is not None:
                raise DuplicateAlgorithm(
                    f"algorithm {algorithm.name!r} is registered by both plugin "
                    f"{other.plugin!r} and plugin {impl.plugin_name!r}"
                )
            algorithms[algorithm.name] = RegisteredAlgorithm(algorithm, impl.plugin_name)
    return AlgorithmRegistry(dict(sorted(algorithms.items())), tuple(broken))


def _drop_invalid_hooks(pm: pluggy.PluginManager, broken: list[BrokenPlugin]) -> None:
    """A plugin implementing a hook that does not exist (a typo) is broken, not fatal."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            pm.unregister(exc.plugin)
            broken.append(_broken(name, exc))


def _checked(algorithm: object) -> AnyAlgorithm:
    if not isinstance(algorithm, Algorithm | AsyncAlgorithm):
        raise TypeError(f"{algorithm!r} is not a primaa Algorithm or AsyncAlgorithm")
    for attribute in ("name", "version", "summary"):
        if not isinstance(getattr(algorithm, attribute, None), str):
            raise TypeError(f"{type(algorithm).__name__} lacks a string {attribute!r}")
    return algorithm


def _broken(name: str, exc: BaseException) -> BrokenPlugin:
    error = f"{type(exc).__name__}: {exc}"
    log.error("plugin_broken", plugin=name, error=error)
    return BrokenPlugin(name, error)
