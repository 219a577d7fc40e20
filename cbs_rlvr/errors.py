"""The user-facing errors and the redaction of secrets from anything shown or written.

Every error here carries a one-line message meant for the user: the command line prints it
without a traceback. `redact_secrets` is applied to every message that can reach a file, a report
or the terminal, so the W&B API key (and a URL's password) never does; `source_text` is the
snapshot's one boundary for every string that comes from a source (snapshot.clean_source_strings).
"""

from __future__ import annotations

import functools
import logging
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
def _secret_forms(key: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """(plain forms, longest first; base64 cores) of a key: as is, URL-encoded, hex (either
    case), and base64 of KEY and api:KEY."""
    from urllib.parse import quote, quote_plus

    plain = {key, quote(key, safe=""), quote_plus(key), quote(f"api:{key}", safe="")}
    for text in (key, f"api:{key}"):
        plain |= {text.encode().hex(), text.encode().hex().upper()}
    cores = _b64_cores(key.encode()) | _b64_cores(f"api:{key}".encode())
    return tuple(sorted((p for p in plain if p), key=len, reverse=True)), frozenset(cores)


#: `scheme://user:password@host`: the password goes, whatever the URL (WANDB_BASE_URL, a proxy).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:'\"<>]*):[^\s/@'\"<>]*@")
#: environment variables whose URL may carry a password that is a secret wherever it appears
_URL_VARIABLES = ("WANDB_BASE_URL", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy",
                  "http_proxy", "all_proxy")


def _url_passwords() -> list[str]:
    """The passwords in the URLs of _URL_VARIABLES (`http://user:pw@host`), decoded."""
    from urllib.parse import unquote, urlsplit

    found = []
    for name in _URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if "@" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                found += [password, unquote(password)]
    return found


def secrets_in_environment() -> list[str]:
    """Every secret redact_secrets removes: the W&B API key (WANDB_API_KEY, ~/.netrc) and the
    passwords of URLs in the environment; those shorter than 6 characters only in URL form."""
    found = [os.environ.get("WANDB_API_KEY", "").strip(), *_netrc_keys(), *_url_passwords()]
    return list(dict.fromkeys(k for k in found if len(k) >= 6))


def redact_secrets(text: str, secrets: list[str] | None = None) -> str:
    """Remove the W&B API key (from WANDB_API_KEY or ~/.netrc) from text that may end up in a
    file or on screen: the key as is, URL-encoded, hex, base64-encoded (alone or as `api:KEY`,
    the HTTP Basic form, either alphabet, padded or not, at any of the three alignments), every
    Authorization header value, and the password of any `scheme://user:password@host` URL (and
    that of WANDB_BASE_URL or a proxy variable wherever it appears). `secrets`: the list of
    `secrets_in_environment()`, when the caller redacts many strings at once."""
    text = str(text)
    for key in secrets_in_environment() if secrets is None else secrets:
        plain, cores = _secret_forms(key)
        for form in plain:
            if form in text:
                text = text.replace(form, "***")
        if any(core in text for core in cores):
            text = _B64_TOKEN.sub(lambda m, cores=cores: "***" if any(c in m.group(0) for c in cores)
                                  else m.group(0), text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + ":***@", text)
    low = text.lower()  # the patterns below are costly on long text (a config): only where they can match
    if "authorization" in low:
        text = _HEADER_VALUE.sub(lambda m: m.group(1) + "***", text)
    if "key" in low and "api" in low:
        text = _KEY_ASSIGNMENT.sub(lambda m: m.group(1) + "***", text)
    return text


#: Characters that would break a one-line message, a CSV row or a terminal when printed as they
#: are: C0 and C1 controls, DEL, Unicode line/paragraph separators and the bidirectional
#: overrides that reorder what a reader sees.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def has_unprintable(text: str) -> bool:
    """Whether text holds a character `source_text` writes visibly (a newline, a control).
    ASCII text (a config's JSON) is checked at C speed: str.isprintable is ten times slower."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _PRINTABLE_ASCII))
    return _UNPRINTABLE.search(text) is not None


def _visible(match: re.Match) -> str:
    char = match.group(0)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def source_text(value: Any, secrets: list[str] | None = None) -> Any:
    """A string that came from a source (a run name, tag, group, config, history key, reason),
    as the snapshot keeps it: secrets redacted (`redact_secrets`) and characters that would
    break a line written visibly (a newline as `\\n`). Not HTML-escaped: the reports escape
    what they show. Anything that is not a string is returned as it is."""
    if not isinstance(value, str):
        return value
    text = redact_secrets(value, secrets)
    return _UNPRINTABLE.sub(_visible, text) if has_unprintable(text) else text


class RedactingFormatter(logging.Formatter):
    """A log formatter whose lines pass through `redact_secrets` (and stay one line)."""

    def format(self, record: logging.LogRecord) -> str:
        return source_text(super().format(record))


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


def describe_os_error(exc: OSError) -> str:
    """A failed write or read in one line: 'OUT/data/x.tmp: No space left on device'."""
    what = exc.strerror or (os.strerror(exc.errno) if exc.errno else "")
    what = what or " ".join(str(exc).split())[:200] or type(exc).__name__
    where = exc.filename or getattr(exc, "filename2", None)
    return redact_secrets(f"{where}: {what}" if where else what)
