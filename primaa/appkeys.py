"""Typed keys for the state kept on the aiohttp Application (no module-level singletons)."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from primaa.config import Settings
from primaa.imaging.urlguard import UrlGuard
from primaa.jobs.manager import JobManager
from primaa.metrics import Metrics
from primaa.plugins.registry import AlgorithmRegistry
from primaa.store.protocol import JobStore
from primaa.webhooks.outbox import Outbox

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", AlgorithmRegistry)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", JobStore)
MANAGER = web.AppKey("manager", JobManager)
OUTBOX = web.AppKey("outbox", Outbox)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
OPENAPI = web.AppKey("openapi", dict[str, Any])
URL_GUARD = web.AppKey("url_guard", UrlGuard)
