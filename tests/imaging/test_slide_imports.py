"""The slide layer runs in worker processes: it must not pull in the service's stack."""

from __future__ import annotations

import json
import subprocess
import sys

#: Never loaded by the slide layer.
SERVICE = ("aiohttp", "sqlalchemy", "primaa.api", "primaa.execution", "primaa.jobs", "primaa.store")
#: Loaded by ``import primaa`` itself (the plugin authors' API), never added by the slide layer.
HEAVY = ("shapely", "marshmallow", "primaa.plugins")

_CODE = """
import json, sys
import primaa
before = set(sys.modules)
import primaa.imaging.slides
print(json.dumps({"all": sorted(sys.modules), "added": sorted(set(sys.modules) - before)}))
"""


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_importing_the_slide_layer_loads_no_service_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CODE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    assert "openslide" in loaded["added"]
    assert [m for m in loaded["all"] if _matches(m, SERVICE)] == []
    assert [m for m in loaded["added"] if _matches(m, HEAVY)] == []
    assert [m for m in loaded["added"] if m.startswith("primaa.") and "imaging" not in m] == []
