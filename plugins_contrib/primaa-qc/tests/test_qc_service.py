"""Installed next to primaa, image_qc is served: listed, documented, and run as a job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData

from primaa.app import create_app
from primaa.config import load_settings

pytestmark = pytest.mark.asyncio
CROP = Path(__file__).parent / "data" / "TCGA-DU-5847-R01_s1_crop256.png"


async def test_image_qc_is_listed_documented_and_runs_as_a_job(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    settings = load_settings(env={}, overrides={"data_dir": tmp_path, "workers": 1})
    client = await aiohttp_client(create_app(settings))

    listing = await (await client.get("/algorithms")).json()
    assert {"name": "image_qc", "plugin": "qc"}.items() <= next(
        a for a in listing["algorithms"] if a["name"] == "image_qc"
    ).items()
    document = await (await client.get("/openapi.json")).json()
    assert "Parameters_image_qc" in document["components"]["schemas"]
    detail = await (await client.get("/algorithms/image_qc")).json()
    assert "blur_threshold" in detail["parameters"]["properties"]

    form = FormData()
    form.add_field("algorithm_name", "image_qc")
    form.add_field("image", CROP.read_bytes(), filename=CROP.name, content_type="image/png")
    submitted = await client.post("/jobs", data=form)
    assert submitted.status == 202
    job_id = (await submitted.json())["job_id"]
    for _ in range(600):
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in {"Completed", "Failed"}:
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "Completed", job
    feature = await (await client.get(f"/jobs/{job_id}/result")).json()
    assert feature["geometry"] is None
    assert feature["properties"]["measurements"]["qc_pass"] == 1
