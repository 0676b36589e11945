"""Small modules with one job each: none in the package grows past 400 lines."""

from __future__ import annotations

from pathlib import Path

import primaa

LIMIT = 400


def test_no_module_of_the_package_is_over_400_lines() -> None:
    package = Path(primaa.__file__).parent
    sizes = {
        str(path.relative_to(package)): len(path.read_text().splitlines())
        for path in package.rglob("*.py")
    }
    assert len(sizes) > 50, "the package's modules were not found"
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
