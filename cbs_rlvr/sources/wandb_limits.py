"""How the W&B source bounds and reads failure: the time bounds and retries (what wandb-core
honours, set from the environment, plus the project's per-run and whole-fetch bounds), the errors
the real client raises classified (transient or not, with their HTTP status), and the bounded
parallel pool every run's fetch goes through.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    DataSourceError,
    redact_secrets,
)

# the logger the command line prints as `warning: ...` lines
_LOG = logging.getLogger("cbs_rlvr.data")



# --------------------------------------------------------------------------------------------
# Time bounds and retries: what wandb-core honours, plus the project's own two bounds
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WandbLimits:
    """How long the fetch may take (defaults: the project's). wandb-core's settings, per GraphQL
    request: attempts = graphql_retry_max + 1, each at most graphql_timeout s, waits growing from
    graphql_retry_wait_min to graphql_retry_wait_max s (or what a 429's Retry-After asks, which
    wandb-core does not cap). The project's bounds: run_timeout s per run (a run still fetching
    then is given up, its previous data kept) and total_timeout s for the whole fetch."""

    graphql_retry_max: int = 3
    graphql_retry_wait_min: int = 1
    graphql_retry_wait_max: int = 10
    graphql_timeout: int = 30
    run_timeout: float = 120.0
    total_timeout: float = 3600.0


# field -> the environment variables that set it (the first one set wins)
LIMIT_VARIABLES = {
    "graphql_retry_max": ("WANDB__GRAPHQL_RETRY_MAX",),
    "graphql_retry_wait_min": ("WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS",),
    "graphql_retry_wait_max": ("WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS",),
    "graphql_timeout": ("WANDB__GRAPHQL_TIMEOUT_SECONDS", "WANDB_HTTP_TIMEOUT"),
    "run_timeout": ("CBS_WANDB_RUN_TIMEOUT",),
    "total_timeout": ("CBS_WANDB_TIMEOUT",),
}


def wandb_limits(environ: Mapping[str, str] | None = None) -> WandbLimits:
    """The limits from the environment (LIMIT_VARIABLES), the defaults where unset.

    wandb-core reads whole seconds and ignores a retry count of 0 (it then retries 20 times),
    so the retry count must be at least 1 and the wandb-core values are rounded down."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, variables in LIMIT_VARIABLES.items():
        variable = next((v for v in variables if str(environ.get(v, "")).strip()), None)
        if variable is None:
            continue
        text = str(environ[variable]).strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        lowest = 0 if "wait" in name else 1
        if not math.isfinite(value) or value < lowest:
            what = ("retries, at least 1 (wandb-core ignores 0 and retries 20 times)" if name == "graphql_retry_max"
                    else f"seconds, at least {lowest}")
            raise DataSourceError(f"{variable}={text!r}: expected a number of {what}")
        values[name] = value if name in ("run_timeout", "total_timeout") else int(value)
    return WandbLimits(**values)


# --------------------------------------------------------------------------------------------
# Errors: what the real client raises, classified
# --------------------------------------------------------------------------------------------
# wandb raises wandb.errors.CommError (its .exc, or __cause__, is wandb-core's
# WandbApiFailedError) or WandbApiFailedError itself; the HTTP status is in
# .response.http_status, 0 once wandb-core gave up retrying, when the status is only in the text:
#   "POST .../graphql giving up after 4 attempt(s)\nwhile retrying: HTTP 503: ..."
#   "returned error 404: {...}"  (history pages)   "... status 503 Service Unavailable" (parquet)
#   "the service process is busy and did not respond in time"  (the client's own timeout)
_STATUS_IN_TEXT = re.compile(r"\b(?:HTTP|returned error|status)\s*:?\s*([1-5]\d\d)\b")
_TRANSIENT_TEXT = re.compile(
    r"giving up after|did not respond in time|service process is not running|deadline exceeded|"
    r"timed? ?out|timeout|too many requests|rate limit|temporarily unavailable|bad gateway|"
    r"service unavailable|gateway timeout|connection (?:reset|refused|aborted|closed)|broken pipe|"
    r"\bEOF\b|error sending request|no such host|network is unreachable",
    re.IGNORECASE)
_TRANSIENT_TYPES = {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError", "ConnectionError",
                    "ChunkedEncodingError", "ProtocolError", "RemoteDisconnected", "IncompleteRead"}


def _error_chain(exc: BaseException) -> list[BaseException]:
    """exc and what it wraps (CommError.exc, __cause__, __context__), outermost first."""
    chain: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        obj = stack.pop(0)
        if not isinstance(obj, BaseException) or any(obj is seen for seen in chain):
            continue
        chain.append(obj)
        stack.extend([getattr(obj, "exc", None), obj.__cause__, obj.__context__])
    return chain


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an error of the W&B client, from its fields or, once wandb-core has
    given up retrying (status 0), from its message; None when there was no HTTP answer."""
    chain = _error_chain(exc)
    for error in chain:
        for holder in (getattr(error, "response", None), error):
            for attr in ("http_status", "status_code", "status", "code"):
                value = getattr(holder, attr, None)
                if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                    return value
    for error in chain:
        found = _STATUS_IN_TEXT.findall(str(error))
        if found:
            return int(found[-1])  # the last attempt's status
    return None


def classify_error(exc: BaseException) -> str:
    """`auth` (401/403), `not_found` (404, no such project or run), `transient` (429, 408, 5xx
    but 501, timeouts, refused or dropped connections, wandb-core giving up after retries) or
    `permanent` (the rest: a bad request, an answer that cannot be parsed)."""
    status = http_status(exc)
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status in (408, 429) or (status is not None and status >= 500 and status != 501):
        return "transient"
    chain = _error_chain(exc)
    if any("could not find project" in str(e).lower() or type(e).__name__ in ("RunNotFoundError", "RunNotFound") for e in chain):
        return "not_found"
    if status is None and any(
            isinstance(e, (TimeoutError, ConnectionError)) or type(e).__name__ in _TRANSIENT_TYPES
            or _TRANSIENT_TEXT.search(str(e)) for e in chain):
        return "transient"
    return "permanent"


def is_transient_error(exc: BaseException) -> bool:
    """Worth trying again later (the run keeps its previous data): see classify_error."""
    return classify_error(exc) == "transient"


_WANDB_ERROR_TYPES = {"CommError", "AuthenticationError", "WandbApiFailedError"}


def _describe(exc: BaseException) -> str:
    """One line for a reason or an error message: the innermost message (the most specific), the
    HTTP status, and for wandb-core's retries only the last error and the number of attempts:
    'HTTP 503: service unavailable (wandb gave up after 4 attempts)'."""
    chain = _error_chain(exc)
    inner = next((e for e in reversed(chain) if str(e).strip()), exc)
    text = " ".join(str(inner).split())
    gave_up = re.search(r"giving up after (\d+) attempt\(s\)", text)
    if gave_up:
        last = text.rsplit("while retrying:", 1)[-1] if "while retrying:" in text else text[gave_up.end():]
        last = re.sub(r'^[:\s]*(?:POST|GET|HEAD|Post|Get|Head) "[^"]*":\s*', "", last.strip(" :"))
        text = f"{last} (wandb gave up after {gave_up.group(1)} attempts)"
    if "invalid character '<' looking for beginning of value" in text:  # wandb-core's JSON decoder
        text = f"an HTML page where GraphQL was expected: a proxy or login page? ({text})"
    status = http_status(exc)
    if status is not None and str(status) not in text:
        text = f"HTTP {status}: {text}"
    if type(inner).__name__ not in _WANDB_ERROR_TYPES:
        text = f"{type(inner).__name__}: {text}"
    return redact_secrets(text)[:300]  # redacted before cut, so no part of a key survives


# --------------------------------------------------------------------------------------------
# Parallel fetch with a time bound per run and for the whole fetch
# --------------------------------------------------------------------------------------------
def run_bounded(jobs: Sequence[Callable[[], Any]], *, max_workers: int, run_timeout: float,
                total_timeout: float, timed_out: Callable[[int, str], Any],
                done: Callable[[], Any] = lambda: None) -> list[Any]:
    """Run jobs in at most `max_workers` threads; a job still running after `run_timeout` s, or
    when `total_timeout` s have passed, is given up: its result is `timed_out(index, why)`.

    The threads are daemons: a job given up (a request wandb-core keeps retrying, a Retry-After
    of an hour) neither holds up the fetch nor the interpreter's exit; its late result is dropped.
    An exception raised by a job (a bug: _fetch_api_run classifies every API error) is re-raised.
    """
    results: list[Any] = [None] * len(jobs)
    finished: queue.Queue = queue.Queue()
    running: dict[int, float] = {}  # job index -> start (monotonic)
    start_all = time.monotonic()
    next_job = 0

    def work(index: int) -> None:
        try:
            finished.put((index, jobs[index](), None))
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
            finished.put((index, None, exc))

    def give_up(index: int, why: str) -> None:
        results[index] = timed_out(index, why)
        done()

    while next_job < len(jobs) or running:
        now = time.monotonic()
        if now - start_all >= total_timeout:
            for index in list(running):
                del running[index]
                give_up(index, f"not answered within the fetch's time bound of {total_timeout:g} s (CBS_WANDB_TIMEOUT)")
            for index in range(next_job, len(jobs)):
                give_up(index, f"not fetched within the fetch's time bound of {total_timeout:g} s (CBS_WANDB_TIMEOUT)")
            break
        while next_job < len(jobs) and len(running) < max_workers:
            running[next_job] = now
            threading.Thread(target=work, args=(next_job,), daemon=True, name=f"wandb-fetch-{next_job}").start()
            next_job += 1
        wake = min(min(running.values()) + run_timeout, start_all + total_timeout)
        try:
            index, result, error = finished.get(timeout=max(0.0, wake - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for index, started in list(running.items()):
                if now - started >= run_timeout:
                    del running[index]
                    give_up(index, f"no answer within {run_timeout:g} s (CBS_WANDB_RUN_TIMEOUT)")
            continue
        if index not in running:
            continue  # given up earlier; its late result is dropped
        del running[index]
        if error is not None:
            raise error
        results[index] = result
        done()
    return results


