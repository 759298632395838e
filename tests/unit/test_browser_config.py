"""`rill serve`'s browser and connection flags (--allowed-hosts, --cors-origins, the read timeouts,
--max-connections) and their RILL_* variables into ServerConfig, normalised or refused at start."""

from __future__ import annotations

import os

import pytest

from rill.api.http.server import uvicorn_config
from rill.cli import build_parser, config_from_args, main
from rill.config import ServerConfig, normalized_origin


@pytest.fixture(autouse=True)
def no_rill_env(monkeypatch):
    for name in os.environ:
        if name.startswith("RILL_"):
            monkeypatch.delenv(name)


def config_of(*flags: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(["serve", *flags]))


def test_defaults_serve_no_extra_name_nor_origin_and_time_only_reads():
    config = config_of()
    assert config.allowed_hosts == () and config.cors_origins == ()
    assert (config.header_timeout, config.body_timeout, config.keep_alive_timeout) == (10.0, 30.0, 5.0)
    assert config.max_connections == 1000


def test_flags_are_comma_separated_and_normalised():
    config = config_of("--allowed-hosts", " Rill.Example.com., .LAN ,[::1]", "--cors-origins",
                       "HTTP://LocalHost:3000/, https://app.example.com:443,*")
    assert config.allowed_hosts == ("rill.example.com", ".lan", "::1")
    assert config.cors_origins == ("http://localhost:3000", "https://app.example.com", "*")


def test_the_environment_is_read_when_a_flag_is_absent(monkeypatch):
    monkeypatch.setenv("RILL_ALLOWED_HOSTS", "gpu-box,gpu-box.lan")
    monkeypatch.setenv("RILL_CORS_ORIGINS", "http://localhost:5173")
    monkeypatch.setenv("RILL_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("RILL_BODY_TIMEOUT", "7")
    monkeypatch.setenv("RILL_KEEP_ALIVE_TIMEOUT", "1")
    monkeypatch.setenv("RILL_MAX_CONNECTIONS", "64")
    config = config_of()
    assert config.allowed_hosts == ("gpu-box", "gpu-box.lan")
    assert config.cors_origins == ("http://localhost:5173",)
    assert (config.header_timeout, config.body_timeout, config.keep_alive_timeout, config.max_connections) == \
        (2.5, 7.0, 1.0, 64)
    assert config_of("--max-connections", "8").max_connections == 8  # the flag wins


def test_a_bad_environment_value_is_a_usage_error_naming_the_flag(monkeypatch, capsys):
    monkeypatch.setenv("RILL_HEADER_TIMEOUT", "soon")
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve"])
    assert exit_info.value.code == 2
    assert "--header-timeout" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (("--cors-origins", "http://localhost:3000/app"), "--cors-origins"),
    (("--cors-origins", "localhost:3000"), "--cors-origins"),
    (("--cors-origins", "null"), "--cors-origins"),
    (("--cors-origins", "ftp://example.com"), "--cors-origins"),
    (("--allowed-hosts", "exa mple.com"), "--allowed-hosts"),
    (("--allowed-hosts", "http://example.com"), "--allowed-hosts"),
    (("--header-timeout", "0"), "--header-timeout"),
    (("--body-timeout", "-1"), "--body-timeout"),
    (("--keep-alive-timeout", "nan"), "--keep-alive-timeout"),
    (("--max-connections", "0"), "--max-connections"),
])
def test_bad_values_are_refused_at_start(flags, message, capsys):
    assert main(["serve", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text, origin", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"), ("http://localhost:80", "http://localhost"),
    ("https://[::1]:443/", "https://[::1]"), ("https://[::1]:8443", "https://[::1]:8443"),
    ("null", None), ("http://user@host", None), ("http://host/path", None), ("http://host:99999", None),
    ("http://host?x", None), ("", None),
])
def test_normalized_origin(text, origin):
    assert normalized_origin(text) == origin


def test_uvicorn_runs_rills_protocol_with_the_configured_limits():
    config = ServerConfig(header_timeout=3, body_timeout=4, keep_alive_timeout=6, max_connections=50)
    uv = uvicorn_config(object(), config)
    assert uv.timeout_keep_alive == 6
    limits = uv.http.limits  # type: ignore[union-attr]
    assert (limits.head_timeout, limits.body_timeout, limits.max_connections) == (3, 4, 50)
