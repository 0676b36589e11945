"""``primaa serve | algorithms | run | hash-key``, and ``submit | status | wait``
(:mod:`primaa.cli_client`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import marshmallow

from primaa import __version__, cli_client
from primaa.config import ConfigError, Settings, hash_api_key, load_settings
from primaa.logging import configure_logging
from primaa.plugins.algorithm import AlgorithmResult, AnyAlgorithm, AsyncAlgorithm
from primaa.plugins.registry import AlgorithmRegistry, DuplicateAlgorithm, load_registry
from primaa.results.feature import make_feature

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return _hash_key()
    if args.command in cli_client.COMMANDS:
        return cli_client.run(args)
    try:
        settings = load_settings(
            args.config,
            overrides={
                "host": getattr(args, "host", None),
                "port": getattr(args, "port", None),
                "data_dir": getattr(args, "data_dir", None),
                "workers": getattr(args, "workers", None),
            },
        )
        configure_logging(settings.log_format, settings.log_level)
        registry = load_registry(disabled=settings.disabled_plugins, modules=settings.plugins)
    except (ConfigError, DuplicateAlgorithm) as exc:
        print(f"primaa: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command: str = args.command
    if command == "serve":
        from primaa.api.auth import listen_refusal

        refusal = listen_refusal(settings)
        if refusal is not None:
            print(f"primaa: {refusal}", file=sys.stderr)
            return EXIT_USAGE
        return _serve(settings, registry)
    if command == "algorithms":
        if args.name is not None:
            return _algorithm_detail(registry, args.name, as_json=args.json)
        return _algorithms(registry, as_json=args.json)
    return _run(settings, registry, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="primaa", description=__doc__)
    parser.add_argument("--version", action="version", version=f"primaa {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, help="TOML file overriding config/default.toml")
        return sub

    serve = with_config(commands.add_parser("serve", help="run the HTTP service"))
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--data-dir", type=Path, help="where the database and spool live")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")

    listing = with_config(commands.add_parser("algorithms", help="list installed algorithms"))
    listing.add_argument("name", nargs="?", help="show this algorithm's description and parameters")
    listing.add_argument("--json", action="store_true", help="print JSON (as GET /algorithms)")

    run = with_config(
        commands.add_parser("run", help="run an algorithm on local images and slides")
    )
    run.add_argument("algorithm")
    run.add_argument("images", nargs="+", type=Path)
    run.add_argument(
        "--workers", type=int, help="worker processes for a slide's tiles (default: one per CPU)"
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="algorithm parameter; VALUE is read as JSON when it parses, else as text",
    )
    run.add_argument("--out", type=Path, help="write DIR/<image stem>.geojson per image")
    run.add_argument("--format", choices=["geojson", "qupath"], default="geojson")

    commands.add_parser(
        "hash-key",
        help="read an API key on stdin, print its sha256: form for the api_keys setting",
    )
    cli_client.add_parsers(commands)
    return parser


def _hash_key() -> int:
    """Print the ``sha256:`` form of a key, so config files can hold hashes, not keys."""
    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("API key: ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        print("primaa: no key on stdin", file=sys.stderr)
        return EXIT_USAGE
    print(hash_api_key(key))
    return 0


def _serve(settings: Settings, registry: AlgorithmRegistry) -> int:
    """Serve until SIGTERM/SIGINT, then drain (see :mod:`primaa.server`) and exit 0."""
    from primaa.app import create_app
    from primaa.server import StartupError, listen, serve
    from primaa.store.factory import check_store_url, hold_store
    from primaa.store.file_lock import DatabaseInUse

    try:
        check_data_dir(settings.data_dir)
        check_store_url(settings.resolved_database_url)
        check_executor(settings)
        # Held until the process exits: one service per SQLite file.
        _lock = hold_store(settings.resolved_database_url)
        loop_factory = event_loop_factory(settings.event_loop)
        sock = listen(settings.host, settings.port)
    except (StartupError, ValueError, DatabaseInUse) as exc:
        print(f"primaa: {exc}", file=sys.stderr)
        return EXIT_USAGE
    app = create_app(settings, registry=registry)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(app, sock=sock))
    return 0


def check_executor(settings: Settings) -> None:
    """With ``executor = "dask"``: the extra is installed and the scheduler answers."""
    from primaa.server import StartupError

    if settings.executor == "dask":
        from primaa.execution.dask import check_scheduler

        problem = check_scheduler(settings.dask_scheduler)
        if problem is not None:
            raise StartupError(problem)


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for ``uvloop`` (and ``auto`` when installed), else asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError(
                "event_loop is uvloop but uvloop is not installed: pip install uvloop"
            ) from None
        return None
    return uvloop.new_event_loop


def check_data_dir(data_dir: Path) -> None:
    """The data dir exists (or can be made) and takes a file: else one clear error."""
    from primaa.server import StartupError

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise StartupError(
            f"cannot write to the data directory {data_dir}: {exc.strerror or exc}; choose"
            " another with --data-dir or PRIMAA_DATA_DIR"
        ) from None


def _algorithms(registry: AlgorithmRegistry, *, as_json: bool) -> int:
    rows = [
        {
            "name": entry.algorithm.name,
            "version": entry.algorithm.version,
            "summary": entry.algorithm.summary,
            "plugin": entry.plugin,
            "cpu_bound": entry.algorithm.cpu_bound,
        }
        for entry in registry.algorithms.values()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(str(r["name"])) for r in rows), default=4)
        for row in rows:
            print(
                f"{row['name']:<{width}}  {row['version']:<8}  [{row['plugin']}]  {row['summary']}"
            )
    for broken in registry.broken:
        print(f"broken plugin {broken.name!r}: {broken.error}", file=sys.stderr)
    return 0


def _algorithm_detail(registry: AlgorithmRegistry, name: str, *, as_json: bool) -> int:
    """One algorithm as ``GET /algorithms/{name}`` shows it, or as text for a terminal."""
    from primaa.api.algorithms import describe

    entry = registry.algorithms.get(name)
    if entry is None:
        have = ", ".join(registry.names())
        print(f"primaa: unknown algorithm {name!r}; have: {have}", file=sys.stderr)
        return EXIT_USAGE
    detail = describe(entry)
    if as_json:
        print(json.dumps(detail, indent=2))
        return 0
    print(f"{detail['name']} {detail['version']} [{detail['plugin']}]: {detail['summary']}")
    if detail["description"]:
        print(f"\n{detail['description'].strip()}")
    slides = detail["slides"]
    if slides is None:
        print("\nslides: whole images only (it declares no resolution)")
    elif slides["tiled"]:
        print(f"\nslides: tiles at {slides['mpp']:g} µm/px, {slides['border_um']:g} µm of context")
    else:
        print(f"\nslides: the whole slide at {slides['mpp']:g} µm/px, in one piece")
    properties: dict[str, dict[str, Any]] = detail["parameters"].get("properties", {})
    print("\nparameters:" if properties else "\nno parameters")
    for parameter, schema in properties.items():
        print(f"  {parameter} ({_describe_type(schema)})")
        if "description" in schema:
            print(f"      {schema['description']}")
    return 0


def _describe_type(schema: Mapping[str, Any]) -> str:
    """``number, 4 to 200, default 22`` from a parameter's JSON Schema."""
    parts = [str(schema.get("type", "any"))]
    if "enum" in schema:
        parts.append("one of " + ", ".join(map(str, schema["enum"])))
    if "minimum" in schema or "maximum" in schema:
        parts.append(f"{schema.get('minimum', '')} to {schema.get('maximum', '')}".strip())
    if schema.get("default") is not None:
        parts.append(f"default {json.dumps(schema['default'])}")
    elif "default" in schema:
        parts.append("optional")
    return ", ".join(parts)


def _run(settings: Settings, registry: AlgorithmRegistry, args: argparse.Namespace) -> int:
    from primaa.imaging.decode import ImageDecodeError
    from primaa.imaging.slides import SlideError
    from primaa.jobs.ports import TaskError, WorkerLost
    from primaa.results.qupath import feature_to_qupath

    algorithm = registry.get(args.algorithm)
    if algorithm is None:
        installed = ", ".join(registry.names())
        print(f"primaa: unknown algorithm {args.algorithm!r}; have: {installed}", file=sys.stderr)
        return EXIT_USAGE
    try:
        parameters = algorithm.Parameters().load(cli_client.parse_params(args.param))
    except (ValueError, marshmallow.ValidationError) as exc:
        detail = exc.messages if isinstance(exc, marshmallow.ValidationError) else exc
        print(f"primaa: invalid parameters: {detail}", file=sys.stderr)
        return EXIT_USAGE
    if len(args.images) > 1 and args.out is None:
        print("primaa: give --out DIR when running on several images", file=sys.stderr)
        return EXIT_USAGE
    failures = 0
    for path in args.images:
        try:
            result = _run_one(settings, registry, algorithm, path, parameters)
        except (OSError, ImageDecodeError, SlideError, TaskError, WorkerLost) as exc:
            print(f"primaa: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        feature = make_feature(
            {
                "job_id": None,
                "algorithm_name": algorithm.name,
                "image_url": path.resolve().as_uri(),
                "status": "Completed",
            },
            result,
        )
        document = feature_to_qupath(feature) if args.format == "qupath" else feature
        text = json.dumps(document)
        if args.out is None:
            print(text)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{path.stem}.geojson").write_text(text)
            print(f"{path} -> {args.out / (path.stem + '.geojson')}", file=sys.stderr)
    return 1 if failures else 0


def _run_one(
    settings: Settings,
    registry: AlgorithmRegistry,
    algorithm: AnyAlgorithm,
    path: Path,
    parameters: Mapping[str, Any],
) -> AlgorithmResult:
    """A slide (or a flat image larger than a tile) in tiles on worker processes; any other
    image decoded and run here, in this process."""
    from primaa.cli_slides import plan_image, run_slide
    from primaa.imaging.decode import decode_image

    plan = plan_image(settings, algorithm, path) if algorithm.cpu_bound else None
    if plan is not None:
        level = settings.log_level if settings.log_level.lower() == "debug" else "warning"
        configure_logging(settings.log_format, level)
        return run_slide(settings, registry, algorithm, path, parameters, plan)
    image = decode_image(path, max_pixels=settings.max_image_pixels)
    return _call(algorithm, image, parameters, label=path.name)


def _call(
    algorithm: AnyAlgorithm, image: Any, parameters: Mapping[str, Any], *, label: str
) -> AlgorithmResult:
    def progress(fraction: float) -> None:
        if sys.stderr.isatty():
            print(f"\r{label}: {fraction * 100:5.1f} %", end="", file=sys.stderr)

    if isinstance(algorithm, AsyncAlgorithm):
        return asyncio.run(algorithm.run(image, parameters, progress))
    return algorithm.run(image, parameters, progress)


if __name__ == "__main__":
    sys.exit(main())
