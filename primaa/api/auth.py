"""API keys: who may call the service, and whose jobs a request may see.

A request presents its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
Only SHA-256 digests of the configured keys are kept (``Settings`` hashes plain keys
as it is built), and a presented key is hashed at once and compared with
``hmac.compare_digest``, so neither memory nor a traceback holds a configured key.

The client id of a job is the first 16 hex digits of its key's SHA-256: stable across
restarts and across switching a key from plain to ``sha256:`` form, and not the
key itself, so it may be stored and logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from primaa.api.errors import ApiError
from primaa.appkeys import CLIENT_ID
from primaa.config import API_KEY_HASH_PREFIX, Settings, hash_api_key

#: Routes anyone may call: liveness probes, the public API documentation, and the web
#: viewer's page and files (the page asks for a key and sends it with every API call).
PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs", "/docs/static", "/viewer"})
CLIENT_ID_CHARS = 16
WWW_AUTHENTICATE = 'Bearer realm="primaa"'


def public_paths(settings: Settings) -> frozenset[str]:
    """Canonical route paths served without a key under these settings."""
    return PUBLIC_PATHS if settings.metrics_require_key else PUBLIC_PATHS | {"/metrics"}


def client_id_of_key(key: str) -> str:
    """The non-secret client id of the jobs a key creates."""
    return _digest(key).hex()[:CLIENT_ID_CHARS]


def _digest(key: str) -> bytes:
    # Header values may carry undecodable bytes as surrogates; hash them as they came.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The SHA-256 digests of the accepted keys."""

    def __init__(self, entries: Iterable[str]) -> None:
        digests = []
        for entry in entries:
            hashed = entry if entry.startswith(API_KEY_HASH_PREFIX) else hash_api_key(entry)
            digests.append(bytes.fromhex(hashed.removeprefix(API_KEY_HASH_PREFIX)))
        self._digests = tuple(digests)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def client_id_of(self, presented: str) -> str | None:
        """The client id of ``presented`` when it is an accepted key, else ``None``."""
        digest = _digest(presented)
        matched = False
        for accepted in self._digests:
            matched |= hmac.compare_digest(accepted, digest)
        return digest.hex()[:CLIENT_ID_CHARS] if matched else None


def presented_key(request: web.Request) -> str | None:
    """The key in ``X-API-Key``, else in ``Authorization: Bearer``; ``None`` without one."""
    key = request.headers.get("X-API-Key")
    if key is None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            key = credentials
    key = (key or "").strip()
    return key or None


def api_key_auth(settings: Settings) -> Middleware:
    """Require a valid key on every route but the public ones; no keys configured, no checks.

    An unknown path needs a key too, so probing the API without one learns nothing.
    """
    keys = KeyRing(settings.api_keys)
    public = public_paths(settings)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys and not _is_public(request, public):
            client_id = _authenticated_client(request, keys)
            request[CLIENT_ID] = client_id
            structlog.contextvars.bind_contextvars(client_id=client_id)
        return await handler(request)

    return authenticate


def _is_public(request: web.Request, public: frozenset[str]) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in public


def _authenticated_client(request: web.Request, keys: KeyRing) -> str:
    """Kept apart from the middleware so the presented key is not a local of a frame that
    stays on the stack (and in tracebacks) while the view runs."""
    key = presented_key(request)
    client_id = keys.client_id_of(key) if key is not None else None
    if client_id is None:
        message = (
            "a valid API key is required: send it as `X-API-Key: <key>`"
            " or `Authorization: Bearer <key>`"
            if key is None
            else "the API key is not valid"
        )
        raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
    return client_id


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_refusal(settings: Settings) -> str | None:
    """Why ``primaa serve`` must not start with these settings, or ``None`` when it may.

    Without keys anyone who reaches the port may submit jobs and read every result,
    which is fine on loopback and must be asked for explicitly anywhere else.
    """
    if settings.api_keys or settings.allow_open or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host!r} without API keys: anyone who can reach it"
        " could submit jobs and read every result. Set api_keys (PRIMAA_API_KEYS), or set"
        " allow_open (PRIMAA_ALLOW_OPEN=true) to run without authentication."
    )
