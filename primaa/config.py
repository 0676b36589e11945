"""Settings: defaults, then a ``--config`` file, then ``PRIMAA_*`` environment variables.

``config/default.toml`` documents the defaults (a test keeps it equal to
:class:`Settings`); installed copies need no file to start.

One field, one TOML key, one environment variable (``data_dir`` is
``PRIMAA_DATA_DIR``), so the README table is the whole story. Values are
checked at start-up; a bad one stops the service with a message naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from primaa.config_checks import MIN_WORKER_MEMORY_MB, ConfigError, validate_settings
from primaa.cpus import usable_cpu_count

__all__ = ["MIN_WORKER_MEMORY_MB", "ConfigError", "Settings", "hash_api_key", "load_settings"]

ENV_PREFIX = "PRIMAA_"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: An ``api_keys`` entry with this prefix is the hex SHA-256 of a key, not the key.
API_KEY_HASH_PREFIX = "sha256:"
#: Settings whose values a message must never repeat.
_SECRET_SETTINGS = frozenset({"api_keys", "webhook_secret"})


def hash_api_key(key: str) -> str:
    """The ``sha256:<hex>`` form of an API key, which a config file may hold instead of it."""
    return API_KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told. See README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Where the SQLite database and the image spool live.
    data_dir: Path = Path("data")
    #: SQLAlchemy URL of the job store; empty means SQLite in ``data_dir``.
    database_url: str = ""
    #: Worker processes for CPU-bound algorithms; 0 means one per CPU.
    workers: int = 0
    #: How many I/O-bound algorithm calls may run at once on the event loop.
    io_concurrency: int = 16
    #: Refuse image and callback URLs that resolve to non-public addresses unless true.
    allow_private_urls: bool = False
    #: CIDRs exempt from that refusal, e.g. an internal image server.
    allowed_networks: tuple[IPNetwork, ...] = ()
    #: Seconds a client gets to send a request's headers, and an idle connection stays open.
    keepalive_timeout: float = 15.0
    #: A request body must come at ``min_body_rate`` bytes/s over every such many seconds.
    body_timeout: float = 30.0
    min_body_rate: float = 1024.0
    #: Client connections held at once; 0: the file-descriptor limit less a reserve.
    max_connections: int = 0
    #: Largest JSON request body.
    max_body_bytes: int = 1_048_576
    #: Largest flat image (PNG, JPEG, TIFF in strips), downloaded or uploaded.
    max_image_bytes: int = 1_073_741_824
    #: Largest whole-slide image (SVS, NDPI, tiled TIFF...), downloaded or uploaded: slides are
    #: streamed to disk and read tile by tile, never whole, so this bounds disk, not memory.
    max_slide_bytes: int = 21_474_836_480
    #: Directories ``file://`` image URLs may name (shared storage); empty refuses them all.
    file_roots: tuple[Path, ...] = ()
    #: Largest decoded image; bigger ones fail before decoding (decompression bombs).
    max_image_pixels: int = 400_000_000
    #: Seconds a finished job's image is kept for the web viewer; 0: removed when it ends.
    image_retention_seconds: float = 86_400.0
    #: A result whose JSON is larger is stored gzip-compressed in ``data_dir/results``.
    result_inline_max_bytes: int = 1_048_576
    #: A callback whose result is larger carries its summary and ``result_url`` instead.
    callback_max_result_bytes: int = 1_048_576
    #: The service's address as clients reach it (``https://primaa.example.org``), for the
    #: links it sends; empty: the address each job was submitted to.
    public_url: str = ""
    #: Deep-zoom tiles (encoded JPEGs) the viewer's tile cache holds, across all jobs.
    viewer_tile_cache: int = 2048
    #: Side of a slide tile, in pixels at the algorithm's resolution (border included).
    slide_tile_size: int = 2048
    fetch_connect_timeout: float = 10.0
    fetch_read_timeout: float = 60.0
    fetch_total_timeout: float = 900.0
    #: How long a dispatcher holds a Running job without renewing its lease.
    lease_seconds: float = 10.0
    #: Runs of one job (first run plus retries after a lost worker or lease).
    max_attempts: int = 3
    #: Time limit of a job when neither the job nor its algorithm sets one.
    job_timeout: float = 3600.0
    #: No job may ask for more than this.
    max_job_timeout: float = 86400.0
    #: After a timeout or a cancel, how long a worker may take to stop before it is killed.
    kill_grace_seconds: float = 1.0
    #: Address-space limit (RLIMIT_AS, virtual memory) of each worker in MB; 0: none.
    worker_memory_limit_mb: int = 0
    #: Submissions beyond this many unfinished jobs get 429.
    max_unfinished_jobs: int = 100_000
    #: On SIGTERM/SIGINT, how long running jobs may go on before they are handed back.
    shutdown_grace_seconds: float = 30.0
    webhook_timeout: float = 10.0
    #: Callbacks in flight at once, and at most so many to one receiver host.
    webhook_concurrency: int = 16
    webhook_concurrency_per_host: int = 4
    #: On shutdown, how long callbacks in flight may go on; the rest are sent after a restart.
    webhook_shutdown_grace_seconds: float = 2.0
    #: Seconds between claims of jobs and callbacks when nothing wakes the service.
    poll_interval: float = 1.0
    #: Seconds between callback attempts after the first (Standard Webhooks' schedule).
    webhook_retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: ``whsec_``-prefixed base64 key; when set, callbacks carry Standard Webhooks signatures.
    webhook_secret: str = dataclasses.field(default="", repr=False)
    #: Keys a request must present (``X-API-Key`` or ``Authorization: Bearer``), each as
    #: given or as ``sha256:<hex>``; kept only as hashes. None: no authentication.
    api_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    #: Whether ``GET /metrics`` needs a key too (when keys are configured).
    metrics_require_key: bool = True
    #: Without API keys, listen on a non-loopback address anyway.
    allow_open: bool = False
    #: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``.
    event_loop: str = "auto"
    #: ``auto`` (console on a terminal, JSON otherwise), ``json`` or ``console``.
    log_format: str = "auto"
    log_level: str = "info"
    #: Log ``event_loop_blocked`` when the event loop wakes a task this much later than asked.
    loop_lag_warning_ms: float = 20.0
    #: Entry-point names of plugins not to load.
    disabled_plugins: tuple[str, ...] = ()
    #: Extra plugin modules to load by import path, besides the entry points.
    plugins: tuple[str, ...] = ()
    #: Where CPU-bound tasks run: ``local`` (worker processes here) or ``dask`` (a cluster).
    executor: str = "local"
    #: The Dask scheduler's address (``tcp://host:8786``), with ``executor = "dask"``.
    dask_scheduler: str = ""

    def __post_init__(self) -> None:
        # Plain keys become hashes as soon as the settings exist, so nothing built from
        # them (the app, its auth middleware, a repr, a traceback) ever holds a plain key.
        entries = (entry.strip() for entry in self.api_keys)
        hashed = tuple(
            entry.lower() if entry.startswith(API_KEY_HASH_PREFIX) else hash_api_key(entry)
            for entry in entries
        )
        object.__setattr__(self, "api_keys", hashed)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'primaa.sqlite3'}"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def worker_count(self) -> int:
        """``workers``, or one per CPU this process may use (affinity and cgroup quota)."""
        return self.workers or usable_cpu_count()

    def evolve(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then ``config_file``, then ``PRIMAA_*`` from ``env``, then ``overrides`` (CLI)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        values.update(_read_toml(config_file))
    environ = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    _check_env_names(environ, fields)
    for name in fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw, source=ENV_PREFIX + name.upper())
    for name, value in (overrides or {}).items():
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = value
    checked = {name: _coerce(name, value, source=name) for name, value in values.items()}
    settings = Settings(**checked)
    validate_settings(settings)
    return settings


#: Variables of the test suite (e.g. ``PRIMAA_TEST_POSTGRES_URL``), not settings.
TEST_ENV_PREFIX = ENV_PREFIX + "TEST_"
#: Variables of the client commands (``PRIMAA_CLIENT_URL``), set in the same shells.
CLIENT_ENV_PREFIX = ENV_PREFIX + "CLIENT_"


def _check_env_names(environ: Mapping[str, str], fields: Collection[str]) -> None:
    """A misspelt ``PRIMAA_*`` variable is an error, as an unknown config key is:
    ignoring it would run the service on a default the operator meant to change."""
    known = {ENV_PREFIX + name.upper() for name in fields}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            if name.startswith((TEST_ENV_PREFIX, CLIENT_ENV_PREFIX)):
                continue
            suffix = name.removeprefix(ENV_PREFIX).lower()
            close = difflib.get_close_matches(suffix, fields, n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
            raise ConfigError(f"unknown environment variable {name}{hint}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {f.name for f in dataclasses.fields(Settings)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return data


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text.strip(), strict=False)


_SCALARS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: int,
    float: float,
    str: str,
    Path: Path,
    ipaddress.IPv4Network: _parse_network,
}


def _coerce(name: str, value: Any, *, source: str) -> Any:
    """Turn a TOML value or an environment string into the field's type."""
    hint = typing.get_type_hints(Settings)[name]
    try:
        origin = typing.get_origin(hint)
        if origin is tuple:
            item_type = typing.get_args(hint)[0]
            items = [i.strip() for i in value.split(",")] if isinstance(value, str) else list(value)
            return tuple(_scalar(item_type, item) for item in items if str(item).strip() != "")
        return _scalar(hint, value)
    except (ValueError, TypeError) as exc:
        if name in _SECRET_SETTINGS:
            raise ConfigError(f"{source}: expected text") from None
        raise ConfigError(f"{source}: {exc}") from None


def _scalar(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _parse_network(str(value))
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float) and isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if hint is int and isinstance(value, float) and not value.is_integer():
        raise TypeError(f"expected an integer, got {value!r}")
    if hint in (int, float) and isinstance(value, str):
        try:
            return hint(value.strip())
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise ValueError(f"expected {kind}, got {value!r}") from None
    if hint is int:
        return int(value)
    if isinstance(value, hint):
        return value
    if hint is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"expected {hint.__name__}, got {value!r}")
    return _SCALARS[hint](value)
