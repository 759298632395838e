"""Where OpenTelemetry spans go, read from `--otlp-endpoint` / `--otlp-capture-content` and the
standard OTEL_* variables, without importing OpenTelemetry (a server without the `otel` extra
and without an endpoint never loads it)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from rill.errors import ConfigError

INSTALL = "pip install 'rill-server[otel]'"
TRACES_PATH = "/v1/traces"
_TRUE = {"true", "1", "yes", "on"}


@dataclass(frozen=True, slots=True)
class OtelConfig:
    endpoint: str  # the OTLP/HTTP traces URL, .../v1/traces
    capture_content: bool = False  # messages, system instructions and tool definitions on spans
    source: str = "--otlp-endpoint"  # what set the endpoint, for messages


def otel_config(flag_endpoint: str | None, capture_flag: bool, environ: Mapping[str, str] = os.environ) -> OtelConfig | None:
    """The export settings, or None when nothing asks for spans. Precedence: the flag, then
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (taken as the full URL, as the spec says), then
    OTEL_EXPORTER_OTLP_ENDPOINT (a base URL: /v1/traces is appended). OTEL_SDK_DISABLED=true or
    OTEL_TRACES_EXPORTER=none turn export off whatever sets an endpoint."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if flag_endpoint:
        endpoint, source = _with_traces_path(flag_endpoint), "--otlp-endpoint"
    elif environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        endpoint, source = environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        endpoint, source = _with_traces_path(environ["OTEL_EXPORTER_OTLP_ENDPOINT"]), "OTEL_EXPORTER_OTLP_ENDPOINT"
    else:
        if capture_flag:
            raise ConfigError("--otlp-capture-content needs an endpoint: --otlp-endpoint URL or OTEL_EXPORTER_OTLP_ENDPOINT")
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} must be an http:// or https:// URL, got {endpoint!r}")
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip()
    if protocol and protocol != "http/protobuf":
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: Rill exports over OTLP/HTTP with protobuf "
                          "only (http/protobuf); point it at the collector's HTTP port (4318)")
    missing = [m for m in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
               if not _importable(m)]
    if missing:
        raise ConfigError(f"{source} is set, but OpenTelemetry is not installed: {INSTALL} "
                          "(or set OTEL_SDK_DISABLED=true)")
    content = capture_flag or environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in _TRUE
    return OtelConfig(endpoint=endpoint, capture_content=content, source=source)


def _with_traces_path(base: str) -> str:
    base = base.strip()
    return base if base.rstrip("/").endswith(TRACES_PATH) else base.rstrip("/") + TRACES_PATH


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
