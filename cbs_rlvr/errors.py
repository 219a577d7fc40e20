"""The user-facing errors and the redaction of secrets from anything shown or written.

Every error here carries a one-line message meant for the user: the command line prints it
without a traceback. `redact_secrets` is applied to every message, reason and config that can
reach a file, a report or the terminal, so the W&B API key never does.
"""

from __future__ import annotations

import functools
import os
import re
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


#: `Authorization: Basic abc`, `'authorization': 'Bearer abc'`, `WANDB_API_KEY=abc`: the value
#: goes, whatever key it holds (a header of another service is a secret too).
_HEADER_VALUE = re.compile(
    r"""(?i)((?:proxy-)?authorization['"]?\s*[:=]\s*['"]?)(?:(?:basic|bearer|token|digest)\s+)?"""
    r"""[^\s'",;}\]]+""")
_KEY_ASSIGNMENT = re.compile(r"""(?i)(api[_-]?key['"]?\s*[:=]\s*['"]?)[^\s'",;}\]]{6,}""")
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def _netrc_keys() -> list[str]:
    """The passwords of W&B hosts in ~/.netrc (where `wandb login` keeps the key)."""
    import netrc

    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        stamp = path.stat().st_mtime_ns
    except (OSError, RuntimeError, KeyError):
        return []
    if _NETRC_CACHE.get("stamp") != (str(path), stamp):
        keys = []
        try:
            for host, (_login, _account, password) in netrc.netrc(str(path)).hosts.items():
                if password and ("wandb" in host or host in os.environ.get("WANDB_BASE_URL", "")):
                    keys.append(password)
        except (OSError, netrc.NetrcParseError):
            pass
        _NETRC_CACHE.update(stamp=(str(path), stamp), keys=keys)
    return list(_NETRC_CACHE["keys"])


_NETRC_CACHE: dict = {}


def _b64_cores(secret: bytes) -> set[str]:
    """The base64 characters that only `secret` determines, at each of the three alignments it
    can have inside a longer encoded string (e.g. `api:KEY` in HTTP Basic auth), in the standard
    and the URL-safe alphabet: any base64 text containing the secret contains one of them."""
    import base64

    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret).decode()
        start, end = -(-8 * shift // 6), (8 * (shift + len(secret)) - 6) // 6 + 1
        core = encoded[start:end]
        if len(core) >= 8:
            cores.update({core, core.replace("+", "-").replace("/", "_")})
    return cores


@functools.lru_cache(maxsize=8)
def _secret_forms(key: str) -> tuple[set[str], set[str]]:
    """(plain forms, base64 cores) of a key: as is, URL-encoded, and base64 of KEY and api:KEY."""
    from urllib.parse import quote, quote_plus

    plain = {key, quote(key, safe=""), quote_plus(key), quote(f"api:{key}", safe="")}
    cores = _b64_cores(key.encode()) | _b64_cores(f"api:{key}".encode())
    return {p for p in plain if p}, cores


def redact_secrets(text: str) -> str:
    """Remove the W&B API key (from WANDB_API_KEY or ~/.netrc) from text that may end up in a
    file or on screen: the key as is, URL-encoded, base64-encoded (alone or as `api:KEY`, the
    HTTP Basic form, either alphabet, padded or not), and every Authorization header value."""
    text = str(text)
    keys = [k for k in [os.environ.get("WANDB_API_KEY", ""), *_netrc_keys()] if len(k) >= 6]
    for key in keys:
        plain, cores = _secret_forms(key)
        for form in sorted(plain, key=len, reverse=True):
            text = text.replace(form, "***")
        if any(core in text for core in cores):
            text = _B64_TOKEN.sub(lambda m, cores=cores: "***" if any(c in m.group(0) for c in cores)
                                  else m.group(0), text)
    text = _HEADER_VALUE.sub(lambda m: m.group(1) + "***", text)
    return _KEY_ASSIGNMENT.sub(lambda m: m.group(1) + "***", text)


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
