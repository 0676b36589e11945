"""Every hook is documented, in its docstring and in the plugin author's guide."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from primaa.plugins import hookspecs

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HOOKS = [
    name
    for name, value in vars(hookspecs).items()
    if name.startswith("primaa_") and inspect.isfunction(value)
]


def test_there_are_hooks() -> None:
    assert "primaa_algorithms" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_saying_what_it_returns(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.splitlines()) >= 3, f"{hook} needs a docstring"
    assert ":return:" in doc, f"{hook}'s docstring does not say what it returns"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_plugin_guide(hook: str) -> None:
    assert f"`{hook}" in GUIDE.read_text(), f"docs/plugins.md does not document {hook}"
