"""OpenTelemetry export of completions as GenAI spans (the `otel` extra). settings.py and
propagation.py import nothing of OpenTelemetry; the rest is imported only when an endpoint is set."""
