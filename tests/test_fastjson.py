"""The hot-path JSON encoder writes what ``json`` would, datetimes as ISO 8601."""

from __future__ import annotations

import datetime
import json

import pytest

from primaa.fastjson import dumps, loads

MOMENTS = [
    datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC),
    datetime.datetime(2026, 11, 28, 12, 0, 0, 500_000, tzinfo=datetime.UTC),
    datetime.datetime(2026, 11, 28, 12, 0, 0, 1, tzinfo=datetime.UTC),
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_datetimes_are_iso_8601(moment: datetime.datetime) -> None:
    assert json.loads(dumps({"at": moment})) == {"at": moment.isoformat()}


@pytest.mark.parametrize("moment", MOMENTS)
def test_the_fallback_for_big_integers_writes_datetimes_the_same(
    moment: datetime.datetime,
) -> None:
    body = json.loads(dumps({"at": moment, "n": 2**70}))
    assert body == {"at": moment.isoformat(), "n": 2**70}


def test_the_fallback_still_refuses_what_json_refuses_without_a_default() -> None:
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        dumps({"n": 2**70, "x": object()})


def test_the_fallback_keeps_the_callers_default() -> None:
    assert json.loads(dumps({"n": 2**70, "x": object()}, default=lambda _: "?")) == {
        "n": 2**70,
        "x": "?",
    }


@pytest.mark.parametrize(
    "value",
    [
        {"n": 2**70, "m": -(2**64)},
        {"n": 2**63 - 1, "x": 0.1234567890123456789},
        {"nested": [1, 2.5, None, True, "text with 12345678901234567890 in it"]},
        [float("nan")],
        {"long": list(range(2000)), "n": 2**70},
    ],
)
def test_loads_reads_back_exactly_what_json_would(value: object) -> None:
    text = dumps(value).decode()
    assert repr(loads(text)) == repr(json.loads(text))
