"""Result files: written whole or not at all, read back, removed; names that cannot escape
their directory; and which clients get the stored gzip as it is."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from primaa.api.result_stream import accepts_gzip
from primaa.config import ConfigError
from primaa.fastjson import dumps
from primaa.results.feature import summary_feature
from primaa.results.files import (
    ResultFileMissing,
    ResultFiles,
    file_reference,
    plain_chunks,
    referenced_file,
)
from tests.conftest import make_settings

FEATURE: dict[str, Any] = {
    "type": "Feature",
    "geometry": {"type": "MultiPoint", "coordinates": [[float(i), 2.0 * i] for i in range(50_000)]},
    "properties": {
        "job_id": "j1",
        "measurements": {"count": 50_000},
        "object_measurements": [{"area": 1.0}] * 50_000,
    },
}


def test_a_result_file_holds_the_document_compressed(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path / "results")
    document = dumps(FEATURE)
    name = files.write("j1", document)
    path = files.path(name)
    assert path.parent == tmp_path / "results"
    assert gzip.decompress(path.read_bytes()) == document
    assert path.stat().st_size < len(document) / 4
    assert files.read(name) == FEATURE
    assert b"".join(plain_chunks(path)) == document
    assert files.write("j1", document) != name, "each write its own file"


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    with pytest.raises(TypeError):
        files.write("j1", "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_remove_and_missing_files(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    name = files.write("j1", b"{}")
    files.remove(name)
    files.remove(name)
    with pytest.raises(ResultFileMissing):
        files.path(name)


@pytest.mark.parametrize("name", ["../outside.geojson.gz", "/etc/passwd", "a/b.geojson.gz", ""])
def test_a_name_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    (tmp_path / "outside.geojson.gz").write_bytes(b"")
    files = ResultFiles(tmp_path / "results")
    with pytest.raises(ResultFileMissing):
        files.path(name)
    files.remove(name)
    assert (tmp_path / "outside.geojson.gz").exists()


def test_a_reference_is_the_summary_naming_its_file() -> None:
    reference = file_reference(summary_feature(FEATURE), "j1.ab.geojson.gz", 123)
    assert reference["geometry"] is None
    assert reference["properties"] == {"job_id": "j1", "measurements": {"count": 50_000}}
    assert referenced_file(reference) == "j1.ab.geojson.gz"
    assert referenced_file(FEATURE) is None


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("GZIP", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; level=1; q=0.2", True),
        ("gzip;q=0;level=1", False),
        ("gzip;q=x", False),
        ("gzip;q=0.0, deflate", False),
        ("identity", False),
        ("deflate, br", False),
        ("", False),
    ],
)
def test_who_gets_the_gzip_as_it_is(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


@pytest.mark.parametrize(
    "overrides",
    [
        {"public_url": "primaa.example.org"},
        {"public_url": "https://primaa.example.org/?x=1"},
        {"public_url": "ftp://primaa.example.org"},
        {"callback_max_result_bytes": -1},
        {"result_inline_max_bytes": -1},
    ],
)
def test_bad_large_result_settings_stop_start_up(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(overrides))):
        make_settings(tmp_path, **overrides)
