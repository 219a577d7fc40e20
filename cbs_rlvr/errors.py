"""The user-facing errors and the redaction of secrets from anything shown or written.

Every error here carries a one-line message meant for the user: the command line prints it
without a traceback. `redact_secrets` is applied to every message, reason and config that can
reach a file, a report or the terminal, so the W&B API key never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class DataLayerError(Exception):
    """Base class of the data layer's user-facing errors."""


class WandbFileError(DataLayerError):
    """A `.wandb` file that cannot be read at all (empty, bad header, not a W&B file)."""


class DataSourceError(DataLayerError):
    """A source that is missing, malformed, or refuses access."""


class SourceUnreachableError(DataSourceError):
    """A W&B server that cannot be reached (every call failed with transient errors)."""


class WandbCredentialsError(DataSourceError):
    """No W&B API key, a key the server rejects (401), or no access to the entity (403)."""


class WandbNotFoundError(DataSourceError):
    """No such W&B entity or project (404)."""


class SnapshotError(DataLayerError):
    """A snapshot that is missing, torn or corrupt."""


class SnapshotMissingError(SnapshotError):
    """No snapshot has been written in that directory yet."""


def redact_secrets(text: str) -> str:
    """Remove the W&B API key from text that may end up in a file or on screen."""
    key = os.environ.get("WANDB_API_KEY", "")
    if len(key) >= 6 and key in text:
        text = text.replace(key, "***")
    return text


def portable_source(source: Any) -> str:
    """The source as the manifest records it (and the reports print it): the API key redacted,
    a path inside the project relative to it, the home directory written `~`, so no report
    carries a user's absolute home path."""
    from .paths import PROJECT_DIR

    text = redact_secrets(str(source))
    if text.startswith(str(PROJECT_DIR) + os.sep):
        return text[len(str(PROJECT_DIR)) + 1:]
    try:
        home = str(Path.home())
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return text
    if home not in ("", os.sep) and (text == home or text.startswith(home.rstrip(os.sep) + os.sep)):
        text = "~" + text[len(home.rstrip(os.sep)):]
    return text




def describe_error(exc: BaseException, status: int | None = None) -> str:
    """`Type: message` on one line (at most 300 characters of message), secrets redacted;
    with an HTTP status that the message does not already show, `Type: HTTP 503: message`."""
    message = " ".join(str(exc).split())[:300]
    prefix = f"HTTP {status}: " if status is not None and str(status) not in message else ""
    return redact_secrets(f"{type(exc).__name__}: {prefix}{message}")
