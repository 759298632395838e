"""huggingface_hub's exceptions -> ConfigErrors that say what to do (set HF_TOKEN, check the name,
pull while online), and which of them mean the Hub could not be reached (then the cache serves)."""

from __future__ import annotations

import os
import sys

from rill.errors import ConfigError
from rill.hub.spec import HubSpec

# The HTTP client's transport errors, by the module huggingface_hub uses: httpx2 (2.x), httpx (1.x),
# requests (0.x). Looked up in sys.modules, as huggingface_hub has imported its own by then.
_TRANSPORT = (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException"))


def unreachable(exc: BaseException) -> bool:
    """No answer from the Hub, or one that says it is down: the cached copy may serve instead."""
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return True
    if isinstance(exc, errors.HfHubHTTPError):
        status = _status(exc)
        return status is None or status >= 500 or status in (408, 429)
    for module, name in _TRANSPORT:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def hub_error(spec: HubSpec, exc: BaseException, endpoint: str) -> ConfigError:
    """A failed listing or download as a ConfigError naming the spec and what to do."""
    from huggingface_hub import errors

    token = ("HF_TOKEN is set: does its account have access?" if os.environ.get("HF_TOKEN")
             else "set HF_TOKEN to an access token of an account that has access")
    status = _status(exc)
    if isinstance(exc, errors.GatedRepoError):
        return ConfigError(f"{spec}: {spec.repo_id} is gated: accept its terms on its page on the Hub, and {token}")
    if isinstance(exc, errors.RepositoryNotFoundError) and status == 404:
        return ConfigError(f"{spec}: no repository {spec.repo_id} on {endpoint} (check the name)")
    if isinstance(exc, errors.RepositoryNotFoundError) or status in (401, 403):
        return ConfigError(f"{spec}: {endpoint} answered {status or 'not found'} for {spec.repo_id}: it does not "
                           f"exist, or it is private or gated: check the name; {token}")
    if isinstance(exc, errors.RevisionNotFoundError):
        return ConfigError(f"{spec}: {spec.repo_id} has no revision {spec.revision!r} (a branch, tag or commit)")
    if isinstance(exc, errors.EntryNotFoundError):
        return ConfigError(f"{spec}: a file of the model is not in {spec.repo_id} on {endpoint} ({exc})")
    if isinstance(exc, errors.LocalEntryNotFoundError) or unreachable(exc):
        return ConfigError(f"{spec}: the download from {endpoint} failed and the cache does not hold the model: "
                           f"{_first_line(exc)}; run `rill pull {spec}` again (files already downloaded are kept)")
    if isinstance(exc, errors.HfHubHTTPError):
        return ConfigError(f"{spec}: {endpoint} answered {status}: {_first_line(exc)}")
    if isinstance(exc, OSError):  # a full disk, a cache folder that cannot be written, a size mismatch
        return ConfigError(f"{spec}: the download failed: {exc}")
    raise exc


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
