"""``load_settings``: documented defaults, environment, precedence, and errors naming the key."""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from pathlib import Path

import pytest

from primaa.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings

FIELDS = [f.name for f in dataclasses.fields(Settings)]


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "primaa.toml"
    path.write_text(text)
    return path


def test_every_setting_is_documented_in_default_toml() -> None:
    documented = tomllib.loads(DEFAULT_CONFIG.read_text())
    assert sorted(documented) == sorted(FIELDS)


@pytest.mark.parametrize("name", FIELDS)
def test_default_toml_value_is_the_dataclass_default(name: str) -> None:
    """``config/default.toml``, loaded as a config file, and ``Settings()`` agree, key by key."""
    from_file = load_settings(DEFAULT_CONFIG, env={})
    assert getattr(from_file, name) == getattr(Settings(), name)
    assert type(getattr(from_file, name)) is type(getattr(Settings(), name))


def test_without_a_file_the_defaults_are_the_dataclass_ones() -> None:
    assert load_settings(env={}) == Settings()
    assert load_settings(DEFAULT_CONFIG, env={}) == Settings()


def test_real_environment_is_read_when_env_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIMAA_PORT", "8123")
    assert load_settings().port == 8123
    assert load_settings(env={}).port == 8000


def test_allowed_networks_from_env_are_parsed_and_stripped() -> None:
    settings = load_settings(env={"PRIMAA_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.1.1"})
    assert settings.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.1/32"),
    )


def test_ipv6_network_and_host_bits_are_accepted() -> None:
    settings = load_settings(env={"PRIMAA_ALLOWED_NETWORKS": "fd00::/8,10.1.2.3/16"})
    assert settings.allowed_networks == (
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("10.1.0.0/16"),
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("", False),
    ],
)
def test_boolean_from_env(raw: str, expected: bool) -> None:
    assert load_settings(env={"PRIMAA_ALLOW_PRIVATE_URLS": raw}).allow_private_urls is expected


def test_bad_boolean_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^PRIMAA_ALLOW_PRIVATE_URLS: .*'maybe'"):
        load_settings(env={"PRIMAA_ALLOW_PRIVATE_URLS": "maybe"})


def test_integer_and_float_from_env() -> None:
    settings = load_settings(env={"PRIMAA_WORKERS": "2", "PRIMAA_LEASE_SECONDS": " 7.5 "})
    assert settings.workers == 2
    assert settings.worker_count == 2
    assert settings.lease_seconds == 7.5


def test_tuple_of_floats_from_env() -> None:
    schedule = load_settings(env={"PRIMAA_WEBHOOK_RETRY_SCHEDULE": "1,2,3"}).webhook_retry_schedule
    assert schedule == (1.0, 2.0, 3.0)
    assert all(isinstance(delay, float) for delay in schedule)


def test_tuple_of_names_from_env_is_stripped() -> None:
    settings = load_settings(
        env={"PRIMAA_PLUGINS": "mylab.algorithms, other.plugins,", "PRIMAA_DISABLED_PLUGINS": ""}
    )
    assert settings.plugins == ("mylab.algorithms", "other.plugins")
    assert settings.disabled_plugins == ()


def test_paths_and_database_url() -> None:
    settings = load_settings(env={"PRIMAA_DATA_DIR": "/srv/primaa"})
    assert settings.data_dir == Path("/srv/primaa")
    assert settings.resolved_database_url == "sqlite:////srv/primaa/primaa.sqlite3"
    explicit = load_settings(env={"PRIMAA_DATABASE_URL": "postgresql://u@db/primaa"})
    assert explicit.resolved_database_url == "postgresql://u@db/primaa"


def test_precedence_is_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'port = 9001\nhost = "0.0.0.0"\nworkers = 3\n')
    env = {"PRIMAA_PORT": "9002", "PRIMAA_WORKERS": "4"}

    from_file = load_settings(config, env={})
    assert (from_file.port, from_file.host, from_file.workers) == (9001, "0.0.0.0", 3)

    from_env = load_settings(config, env=env)
    assert (from_env.port, from_env.host, from_env.workers) == (9002, "0.0.0.0", 4)

    overridden = load_settings(config, env=env, overrides={"port": 9003, "workers": None})
    assert (overridden.port, overridden.host, overridden.workers) == (9003, "0.0.0.0", 4)


def test_overrides_are_checked_like_any_value(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"data_dir": str(tmp_path), "port": "8081"})
    assert settings.data_dir == tmp_path
    assert settings.port == 8081
    with pytest.raises(ConfigError, match=r"^port: must be 1-65535, got 70000$"):
        load_settings(env={}, overrides={"port": 70000})


def test_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(env={}, overrides={"prot": 8001})


def test_secret_is_not_in_repr() -> None:
    settings = load_settings(env={"PRIMAA_WEBHOOK_SECRET": "whsec_c2VjcmV0LWtleQ=="})
    assert settings.webhook_secret == "whsec_c2VjcmV0LWtleQ=="
    assert "c2VjcmV0" not in repr(settings)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^PRIMAA_PORT: expected an integer, got 'abc'$"):
        load_settings(env={"PRIMAA_PORT": "abc"})
    with pytest.raises(ConfigError, match=r"^PRIMAA_JOB_TIMEOUT: expected a number, got 'soon'$"):
        load_settings(env={"PRIMAA_JOB_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match=r"^PRIMAA_WEBHOOK_RETRY_SCHEDULE: .*'x'"):
        load_settings(env={"PRIMAA_WEBHOOK_RETRY_SCHEDULE": "1,x"})
    with pytest.raises(ConfigError, match=r"^PRIMAA_ALLOWED_NETWORKS: .*'10\.0\.0\.300'"):
        load_settings(env={"PRIMAA_ALLOWED_NETWORKS": "10.0.0.0/8,10.0.0.300"})


@pytest.mark.parametrize(
    ("text", "key", "detail"),
    [
        ("port = 0", "port", "1-65535"),
        ('port = "abc"', "port", "integer"),
        ("port = 80.5", "port", "integer"),
        ("port = true", "port", "number"),
        ('log_format = "xml"', "log_format", "'xml'"),
        ('log_level = "loud"', "log_level", "'loud'"),
        ('webhook_secret = "nope"', "webhook_secret", "whsec_"),
        ('webhook_secret = "whsec_not base64!"', "webhook_secret", "base64"),
        ('webhook_secret = "whsec_"', "webhook_secret", "base64"),
        ('allowed_networks = ["not-a-cidr"]', "allowed_networks", "'not-a-cidr'"),
        ("workers = -1", "workers", "0"),
        ("io_concurrency = 0", "io_concurrency", "at least 1"),
        ("max_attempts = 0", "max_attempts", "at least 1"),
        ("lease_seconds = 0", "lease_seconds", "positive"),
        ("max_image_bytes = -5", "max_image_bytes", "positive"),
        ("webhook_retry_schedule = [1, -2]", "webhook_retry_schedule", "negative"),
        ('allow_private_urls = "maybe"', "allow_private_urls", "'maybe'"),
        ("host = 5", "host", "5"),
    ],
)
def test_bad_file_value_names_the_key(tmp_path: Path, text: str, key: str, detail: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_toml(tmp_path, text + "\n"), env={})
    message = str(caught.value)
    assert message.startswith(f"{key}: "), message
    assert detail in message


def test_file_values_of_the_right_type_are_taken(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        "allow_private_urls = true\n"
        'allowed_networks = ["10.20.0.0/16"]\n'
        "webhook_retry_schedule = [0.5, 2]\n"
        "job_timeout = 60\n"
        'plugins = ["mylab.algorithms"]\n',
    )
    settings = load_settings(config, env={})
    assert settings.allow_private_urls is True
    assert settings.allowed_networks == (ipaddress.ip_network("10.20.0.0/16"),)
    assert settings.webhook_retry_schedule == (0.5, 2.0)
    assert settings.job_timeout == 60.0
    assert isinstance(settings.job_timeout, float)
    assert settings.plugins == ("mylab.algorithms",)


def test_unknown_key_in_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, "prot = 8001\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'") as caught:
        load_settings(config, env={})
    assert str(config) in str(caught.value)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, "port = \n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert str(config) in str(caught.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_settings(missing, env={})
    assert str(missing) in str(caught.value)


def test_evolve_keeps_other_values() -> None:
    settings = load_settings(env={"PRIMAA_PORT": "8100"})
    evolved = settings.evolve(workers=5)
    assert (evolved.port, evolved.workers) == (8100, 5)
    assert settings.workers == 0


def test_unknown_environment_variable_is_an_error_naming_the_closest_setting() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PRIMAA_WORKER": "3"})
    assert (
        str(info.value)
        == "unknown environment variable PRIMAA_WORKER; did you mean PRIMAA_WORKERS?"
    )
    with pytest.raises(ConfigError, match=r"^unknown environment variable PRIMAA_ZZZ$"):
        load_settings(env={"PRIMAA_ZZZ": "1"})


def test_test_suite_variables_and_other_prefixes_are_not_settings() -> None:
    settings = load_settings(env={"PRIMAA_TEST_POSTGRES_URL": "postgresql://x", "PRIMAAX": "1"})
    assert settings == load_settings(env={})


def test_executor_is_local_or_dask_and_dask_needs_its_scheduler() -> None:
    assert load_settings(env={}).executor == "local"
    settings = load_settings(
        env={"PRIMAA_EXECUTOR": "dask", "PRIMAA_DASK_SCHEDULER": "tcp://10.0.0.5:8786"}
    )
    assert (settings.executor, settings.dask_scheduler) == ("dask", "tcp://10.0.0.5:8786")
    with pytest.raises(ConfigError, match=r"^executor: must be local or dask, got 'ray'$"):
        load_settings(env={"PRIMAA_EXECUTOR": "ray"})
    with pytest.raises(ConfigError, match=r"^dask_scheduler: must be the scheduler's address"):
        load_settings(env={"PRIMAA_EXECUTOR": "dask"})
