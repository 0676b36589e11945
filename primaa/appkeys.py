"""Typed keys for state on the Application (no module-level singletons) and on each request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from primaa.config import Settings
from primaa.imaging.deepzoom import DeepZoomTiles
from primaa.imaging.urlguard import UrlGuard
from primaa.jobs.dispatcher import Dispatcher
from primaa.jobs.manager import JobManager
from primaa.jobs.storage import JobStore
from primaa.metrics import Metrics
from primaa.plugins.registry import AlgorithmRegistry
from primaa.results.bbox import ResultIndexCache
from primaa.store.notifications import PostgresNotifications
from primaa.webhooks.outbox import Outbox

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", AlgorithmRegistry)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", JobStore)
MANAGER = web.AppKey("manager", JobManager)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
OUTBOX = web.AppKey("outbox", Outbox)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
OPENAPI = web.AppKey("openapi", dict[str, Any])
URL_GUARD = web.AppKey("url_guard", UrlGuard)
#: ``ok``, or why the executor of CPU-bound tasks cannot start tasks now.
EXECUTOR_STATE: web.AppKey[Callable[[], str]] = web.AppKey("executor_state")
DEEP_ZOOM = web.AppKey("deep_zoom", DeepZoomTiles)
RESULT_INDEXES = web.AppKey("result_indexes", ResultIndexCache)
#: Only on PostgreSQL: the LISTEN connection that wakes this replica.
NOTIFICATIONS = web.AppKey("notifications", PostgresNotifications)

#: Per request: its id, the validated JSON body and query, and the API key that made it.
REQUEST_ID = web.RequestKey("request_id", str)
JSON_BODY = web.RequestKey("json", dict[str, Any])
QUERY = web.RequestKey("querystring", dict[str, Any])
CLIENT_ID = web.RequestKey("client_id", str)
