"""The checks every setting's value passes at start-up, apart from how settings are read."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from primaa.config import Settings

#: Smallest worker memory limit: an idle worker already maps ~650 MB of address space
#: (numpy/OpenBLAS, scipy, OpenCV, measured on 2 CPUs; thread buffers grow with the CPUs).
MIN_WORKER_MEMORY_MB = 1024
_HASHED_KEY = re.compile(r"sha256:[0-9a-f]{64}")
#: An absolute http(s) URL without query or fragment: links are made by appending a path.
_PUBLIC_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names it."""


def _is_webhook_secret(secret: str) -> bool:
    prefix, _, key = secret.partition("_")
    try:
        return prefix == "whsec" and len(base64.b64decode(key, validate=True)) > 0
    except binascii.Error:
        return False


def validate_settings(settings: Settings) -> None:
    """Raise :class:`ConfigError` naming the first setting whose value cannot work."""

    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}")

    require(0 < settings.port < 65536, "port", f"must be 1-65535, got {settings.port}")
    require(settings.workers >= 0, "workers", "must be 0 (one per CPU) or more")
    require(settings.io_concurrency >= 1, "io_concurrency", "must be at least 1")
    require(settings.webhook_concurrency >= 1, "webhook_concurrency", "must be at least 1")
    require(
        settings.webhook_concurrency_per_host >= 1,
        "webhook_concurrency_per_host",
        "must be at least 1",
    )
    require(
        settings.webhook_shutdown_grace_seconds >= 0,
        "webhook_shutdown_grace_seconds",
        "must be 0 (cut callbacks in flight off at once) or more seconds",
    )
    for key in (
        "max_body_bytes",
        "max_image_bytes",
        "max_slide_bytes",
        "max_image_pixels",
        "max_unfinished_jobs",
    ):
        require(getattr(settings, key) > 0, key, "must be positive")
    for key in (
        "fetch_connect_timeout",
        "fetch_read_timeout",
        "fetch_total_timeout",
        "lease_seconds",
        "job_timeout",
        "max_job_timeout",
        "webhook_timeout",
        "poll_interval",
        "loop_lag_warning_ms",
        "keepalive_timeout",
        "body_timeout",
    ):
        require(getattr(settings, key) > 0, key, "must be a positive number of seconds")
    require(
        256 <= settings.slide_tile_size <= 8192,
        "slide_tile_size",
        f"must be 256-8192 pixels, got {settings.slide_tile_size}",
    )
    for root in settings.file_roots:
        require(root.is_absolute(), "file_roots", f"{root} is not an absolute path")
    require(settings.max_attempts >= 1, "max_attempts", "must be at least 1")
    require(settings.min_body_rate >= 0, "min_body_rate", "must not be negative")
    require(settings.max_connections >= 0, "max_connections", "must be 0 (auto) or more")
    require(
        settings.image_retention_seconds >= 0,
        "image_retention_seconds",
        "must be 0 (remove when the job ends) or more seconds",
    )
    for key in ("result_inline_max_bytes", "callback_max_result_bytes"):
        require(getattr(settings, key) >= 0, key, "must not be negative")
    require(
        not settings.public_url or _PUBLIC_URL.fullmatch(settings.public_url) is not None,
        "public_url",
        f"must be http(s)://host[:port][/path], got {settings.public_url!r}",
    )
    require(settings.viewer_tile_cache >= 0, "viewer_tile_cache", "must not be negative")
    require(settings.kill_grace_seconds >= 0, "kill_grace_seconds", "must not be negative")
    require(
        settings.worker_memory_limit_mb == 0
        or settings.worker_memory_limit_mb >= MIN_WORKER_MEMORY_MB,
        "worker_memory_limit_mb",
        f"must be 0 (no limit) or at least {MIN_WORKER_MEMORY_MB}: a worker maps ~650 MB idle",
    )
    require(
        settings.shutdown_grace_seconds >= 0,
        "shutdown_grace_seconds",
        "must be 0 (hand running jobs back at once) or more seconds",
    )
    require(
        all(delay >= 0 for delay in settings.webhook_retry_schedule),
        "webhook_retry_schedule",
        "delays must not be negative",
    )
    require(
        settings.event_loop in {"auto", "uvloop", "asyncio"},
        "event_loop",
        f"must be auto, uvloop or asyncio, got {settings.event_loop!r}",
    )
    require(
        settings.log_format in {"auto", "json", "console"},
        "log_format",
        f"must be auto, json or console, got {settings.log_format!r}",
    )
    require(
        settings.executor in {"local", "dask"},
        "executor",
        f"must be local or dask, got {settings.executor!r}",
    )
    require(
        settings.executor != "dask" or bool(settings.dask_scheduler.strip()),
        "dask_scheduler",
        "must be the scheduler's address (e.g. tcp://10.0.0.5:8786) when executor is dask",
    )
    require(
        settings.log_level.lower() in {"debug", "info", "warning", "error", "critical"},
        "log_level",
        f"unknown level {settings.log_level!r}",
    )
    require(
        not settings.webhook_secret or _is_webhook_secret(settings.webhook_secret),
        "webhook_secret",
        "must be whsec_ followed by a base64 key",
    )
    for number, entry in enumerate(settings.api_keys, 1):
        require(
            _HASHED_KEY.fullmatch(entry) is not None,
            "api_keys",
            f"entry {number} starts with sha256: but is not followed by 64 hex digits",
        )
