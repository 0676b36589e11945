"""How the registry treats plugins: built-ins through the entry point, broken ones, duplicates.

The broken and duplicate example packages next to this file are never installed in the
shared environment; their entry points are injected here instead, and their modules are
imported from source, so what fails is the real package and not a stand-in.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

from primaa import Algorithm, AlgorithmResult, Progress, RGBImage, hookimpl
from primaa.plugins.hookspecs import ENTRY_POINT_GROUP
from primaa.plugins.registry import DuplicateAlgorithm, load_registry

HERE = Path(__file__).parent
BROKEN = importlib.metadata.EntryPoint(
    name="broken", value="primaa_broken_example", group=ENTRY_POINT_GROUP
)
DUPLICATE = importlib.metadata.EntryPoint(
    name="dup", value="primaa_duplicate_example", group=ENTRY_POINT_GROUP
)


class Echo(Algorithm):
    name: ClassVar[str] = "echo"
    version: ClassVar[str] = "1.0"
    summary: ClassVar[str] = "Measures nothing."

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        return AlgorithmResult(geometry=None)


class Unnamed(Algorithm):
    """Forgot its ``version`` and ``summary``."""

    name: ClassVar[str] = "unnamed"

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        return AlgorithmResult(geometry=None)


class Plugin:
    """A plugin object whose hook returns (or raises) whatever ``provide`` does."""

    def __init__(self, provide: Callable[[], Any]) -> None:
        self._provide = provide

    @hookimpl
    def primaa_algorithms(self) -> Any:
        return self._provide()


def _explode() -> list[Algorithm]:
    raise RuntimeError("model file not found")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[[importlib.metadata.EntryPoint], None]:
    """Make primaa see an example package as if it were pip-installed."""
    real = importlib.metadata.entry_points
    extra: list[importlib.metadata.EntryPoint] = []

    def entry_points(*, group: str) -> importlib.metadata.EntryPoints:
        found = [*real(group=group), *(ep for ep in extra if ep.group == group)]
        return importlib.metadata.EntryPoints(found)

    def install(entry_point: importlib.metadata.EntryPoint) -> None:
        folder = {"broken": "broken_plugin", "dup": "duplicate_plugin"}[entry_point.name]
        monkeypatch.syspath_prepend(str(HERE / folder))
        extra.append(entry_point)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return install


def test_builtins_come_through_the_builtin_entry_point() -> None:
    registry = load_registry()
    assert registry.algorithms["poi_detection"].plugin == "builtin"
    assert registry.algorithms["roi_detection"].plugin == "builtin"
    assert registry.broken == ()


def test_plugin_that_fails_to_import_is_listed_as_broken_and_the_rest_load(
    installed: Callable[[importlib.metadata.EntryPoint], None],
) -> None:
    installed(BROKEN)
    with capture_logs() as logs:
        registry = load_registry()
    [broken] = registry.broken
    assert broken.name == "broken"
    assert broken.error.startswith("ModuleNotFoundError")
    assert "primaa_missing_dependency" in broken.error
    assert {"poi_detection", "roi_detection"} <= set(registry.names())
    assert [(e["event"], e["plugin"]) for e in logs] == [("plugin_broken", "broken")]


def test_hook_that_raises_is_broken_and_others_load() -> None:
    registry = load_registry(
        extra_plugins={"explodes": Plugin(_explode), "fine": Plugin(lambda: [Echo()])}
    )
    assert [(b.name, b.error) for b in registry.broken] == [
        ("explodes", "RuntimeError: model file not found")
    ]
    assert registry.algorithms["echo"].plugin == "fine"
    assert "poi_detection" in registry


class MisspelledHook:
    """Implements ``primaa_algorithm`` (no s): pluggy rejects it as an unknown hook."""

    @hookimpl
    def primaa_algorithm(self) -> list[Algorithm]:
        return [Echo()]


def test_plugin_with_an_unknown_hook_is_broken_and_start_up_goes_on() -> None:
    registry = load_registry(
        extra_plugins={"typo": MisspelledHook(), "fine": Plugin(lambda: [Echo()])}
    )
    [broken] = registry.broken
    assert broken.name == "typo"
    assert "primaa_algorithm" in broken.error
    assert registry.algorithms["echo"].plugin == "fine"
    assert "poi_detection" in registry


@pytest.mark.parametrize(
    ("provide", "error"),
    [
        (lambda: [object()], "is not a primaa Algorithm"),
        (lambda: [Echo, Echo()], "is not a primaa Algorithm"),  # the class, not an instance
        (lambda: None, "TypeError"),  # forgot to return
        (lambda: [Unnamed()], "lacks a string 'version'"),
    ],
)
def test_hook_returning_something_else_than_algorithms_is_broken(
    provide: Callable[[], Any], error: str
) -> None:
    registry = load_registry(extra_plugins={"odd": Plugin(provide)})
    [broken] = registry.broken
    assert broken.name == "odd"
    assert error in broken.error
    assert "echo" not in registry, "a partly bad plugin registers nothing"
    assert "poi_detection" in registry


def test_installed_plugin_reusing_a_builtin_name_stops_start_up_naming_both(
    installed: Callable[[importlib.metadata.EntryPoint], None],
) -> None:
    installed(DUPLICATE)
    with pytest.raises(DuplicateAlgorithm, match="'poi_detection'") as raised:
        load_registry()
    assert "'builtin'" in str(raised.value)
    assert "'dup'" in str(raised.value)


def test_duplicate_between_two_plugins_names_both() -> None:
    plugins = {"alpha": Plugin(lambda: [Echo()]), "beta": Plugin(lambda: [Echo()])}
    with pytest.raises(DuplicateAlgorithm, match="'echo'") as raised:
        load_registry(extra_plugins=plugins)
    assert "'alpha'" in str(raised.value)
    assert "'beta'" in str(raised.value)


def test_disabled_plugins_are_not_loaded(
    installed: Callable[[importlib.metadata.EntryPoint], None],
) -> None:
    installed(BROKEN)
    installed(DUPLICATE)
    registry = load_registry(disabled={"builtin", "broken"})
    assert registry.broken == ()
    assert registry.algorithms["poi_detection"].plugin == "dup"
    assert "roi_detection" not in registry
