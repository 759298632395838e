"""Rill: a self-hosted, streaming-first OpenAI-compatible chat-completions server."""

__version__ = "0.1.0"
