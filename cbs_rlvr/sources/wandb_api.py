"""The W&B server through the public API (`wandb.Api`): only the needed keys, unsampled,
runs in parallel, transient errors retried, incremental against the previous snapshot."""

from __future__ import annotations

import concurrent.futures
import fnmatch
import math
import numbers
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import DataSourceError, SourceUnreachableError, describe_error
from ..runs import (
    REASON_NO_VALIDATION,
    RUNS_COLUMNS,
    assemble_snapshot_frames,
    iso_utc,
    normalise_raw_run,
    normalise_run_state,
    run_metadata,
    unwrap_config_value,
)

# Keys the analysis needs from a W&B run (fnmatch patterns); only these are fetched from the server.
NEEDED_KEY_PATTERNS = (
    "val-core/*",
    "training/global_step",
    "critic/score/mean",
    "actor/entropy",
    "actor/grad_norm",
    "perf/*",
    "timing_s/step",
    "grad_noise/*",
)

# --------------------------------------------------------------------------------------------
# W&B server (public API)
# --------------------------------------------------------------------------------------------
_TRANSIENT_NAMES = {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError", "ConnectionError",
                    "ChunkedEncodingError", "ProtocolError", "RemoteDisconnected", "IncompleteRead"}
_TRANSIENT_TEXT = re.compile(r"too many requests|rate limit|timed? ?out|temporarily unavailable|"
                             r"bad gateway|service unavailable|gateway timeout|connection (reset|refused|aborted)",
                             re.IGNORECASE)


def _http_status(exc: BaseException) -> int | None:
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        for attr in ("status_code", "status", "code"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
        stack.extend([getattr(obj, "response", None), getattr(obj, "exc", None),
                      getattr(obj, "__cause__", None), getattr(obj, "__context__", None)])
    return None


def is_transient_error(exc: BaseException) -> bool:
    """HTTP 429 / 5xx, timeouts and dropped connections are worth retrying; the rest are not."""
    status = _http_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    return bool(_TRANSIENT_TEXT.search(str(exc)))




def _describe(exc: BaseException) -> str:
    return describe_error(exc, _http_status(exc))


class _RetriesExhausted(Exception):
    def __init__(self, last: BaseException, attempts: int):
        super().__init__(f"still failing after {attempts} attempts: {_describe(last)}")
        self.last, self.attempts = last, attempts


def _call_with_retries(func: Callable[[], Any], *, max_retries: int, backoff: float, max_backoff: float,
                       sleep: Callable[[float], Any]) -> Any:
    """func() with exponential backoff and full jitter on transient errors.

    Non-transient errors propagate at once; transient ones after `max_retries` retries raise
    _RetriesExhausted.
    """
    for attempt in range(max_retries + 1):
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 -- classified right here
            if not is_transient_error(exc):
                raise
            if attempt == max_retries:
                raise _RetriesExhausted(exc, attempt + 1) from None
            sleep(min(max_backoff, backoff * 2**attempt) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def needed_keys(available: Iterable[str], patterns: Sequence[str] = NEEDED_KEY_PATTERNS) -> list[str]:
    """The keys among `available` the analysis needs, sorted."""
    return sorted({k for k in available if any(fnmatch.fnmatchcase(k, p) for p in patterns)})


def history_key_groups(keys: Iterable[str], counts: Mapping[str, int] | None = None) -> list[list[str]]:
    """Split keys into groups logged together, one `scan_history` call each.

    `scan_history(keys=...)` returns only rows in which *all* requested keys are present, so keys
    logged at different steps must not share a call: validation keys (every test_freq steps)
    must not be fetched with per-step training keys. With `counts` (how many history rows hold
    each key, from the run's historyKeys) keys logged equally often form one group: for verl,
    one call for the per-step keys and one for the validation keys, instead of one per family
    (every call costs a lastHistoryStep request plus its pages). The caller checks each group's
    row count and refetches key by key if keys of equal counts were not logged together. Keys
    without a count are grouped by family (the part before the first '/'): verl logs each family
    from one place.
    """
    counts = counts or {}
    groups: dict[Any, list[str]] = {}
    for key in sorted(keys):
        group = ("count", counts[key]) if counts.get(key) else ("family", key.split("/", 1)[0])
        groups.setdefault(group, []).append(key)
    return list(groups.values())


def _history_key_counts(run: Any) -> dict[str, int]:
    """key -> number of history rows holding it, from the run's `historyKeys` ({} if absent).

    W&B's form: {"keys": {key: {"typeCounts": [{"type": "number", "count": N}, ...]}}, "lastStep": S}.
    """
    info = _run_attr(run, "history_keys")
    keys = info.get("keys") if isinstance(info, Mapping) else None
    if not isinstance(keys, Mapping):
        return {}
    counts = {}
    for key, meta in keys.items():
        types = meta.get("typeCounts") if isinstance(meta, Mapping) else None
        if isinstance(types, list):
            total = sum(t["count"] for t in types if isinstance(t, Mapping) and isinstance(t.get("count"), int)
                        and not isinstance(t.get("count"), bool))
            if total > 0:
                counts[str(key)] = total
    return counts


def _run_attr(run: Any, *names: str) -> Any:
    for name in names:
        try:
            value = getattr(run, name)
        except AttributeError:
            continue
        if value is not None:
            return value
    return None


def _run_available_keys(run: Any) -> set[str]:
    keys: set[str] = set()
    summary = _run_attr(run, "summary")
    if summary is not None:
        keys.update(str(k) for k in summary.keys())
    history_keys = _run_attr(run, "history_keys")  # {"keys": {...}, "lastStep": N} on wandb.Api runs
    if isinstance(history_keys, Mapping) and isinstance(history_keys.get("keys"), Mapping):
        keys.update(str(k) for k in history_keys["keys"])
    return keys


def _api_run_status(run: Any) -> dict:
    last_step = _run_attr(run, "lastHistoryStep")
    return {
        "state": normalise_run_state(_run_attr(run, "state")),
        "wandb_last_step": int(last_step) if isinstance(last_step, numbers.Real) and last_step >= 0 else None,
        # wandb.Api runs have no update time; the heartbeat is the last time the run wrote anything
        "updated_at": iso_utc(_run_attr(run, "heartbeat_at", "updated_at")),
    }


def _same_status(previous: Mapping, status: Mapping) -> bool:
    def norm(value: Any) -> Any:
        return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value

    return (norm(previous.get("state")) == status["state"]
            and norm(previous.get("updated_at")) == status["updated_at"]
            and status["wandb_last_step"] is not None
            and norm(previous.get("wandb_last_step")) is not None
            and int(previous["wandb_last_step"]) == status["wandb_last_step"])


def _fetch_api_run(run: Any, path: str, previous: Mapping | None, retry: Callable[[Callable[[], Any]], Any],
                   page_size: int, patterns: Sequence[str], scan_each_key: bool) -> dict:
    """One W&B run -> a run entry, an exclusion, or {"kind": "reused"} / {"kind": "failed"}."""
    run_id = str(_run_attr(run, "id"))
    source = f"wandb:{path}/{run_id}"
    base = {"source": source, "run_id": run_id, "name": None}
    try:
        base["name"] = _run_attr(run, "name")
        status = retry(lambda: _api_run_status(run))
        if previous is not None and _same_status(previous, status):
            return {"kind": "reused", "run_id": run_id}
        config = retry(lambda: dict(_run_attr(run, "config") or {}))
        config = {k: unwrap_config_value(v) for k, v in config.items() if not str(k).startswith("_wandb")}
        meta = run_metadata(base["name"], config)
        if meta["reason"]:
            return {"kind": "excluded", "row": {**base, "reason": meta["reason"]}}
        keys = needed_keys(retry(lambda: _run_available_keys(run)), patterns)
        if not any(k.startswith("val-core/") for k in keys):
            return {"kind": "excluded", "row": {**base, "reason": REASON_NO_VALIDATION}}
        rows_by_step: dict[int, dict] = {}
        counts = {} if scan_each_key else retry(lambda: _history_key_counts(run))
        groups = [[k] for k in keys] if scan_each_key else history_key_groups(keys, counts)
        for group in groups:
            request = ["_step", *group]
            rows = retry(lambda request=request: list(run.scan_history(keys=request, page_size=page_size)))
            if len(group) > 1 and len(rows) < counts.get(group[0], 0):
                # keys logged equally often but not at the same steps: the joint scan dropped
                # rows, so fetch each key on its own (rare; nothing is lost)
                rows = [row for key in group for row in retry(
                    lambda key=key: list(run.scan_history(keys=["_step", key], page_size=page_size)))]
            for row in rows:
                step = row.get("_step")
                if isinstance(step, numbers.Real) and math.isfinite(step):
                    rows_by_step.setdefault(int(step), {"_step": int(step)}).update(row)
        raw = {
            **base,
            "config": config,
            "state": status["state"],
            "rows": [rows_by_step[s] for s in sorted(rows_by_step)],
            "start_time": _run_attr(run, "created_at", "createdAt"),
            "updated_at": status["updated_at"],
            "wandb_last_step": status["wandb_last_step"],
        }
        return normalise_raw_run(raw)
    except _RetriesExhausted as exc:
        return {"kind": "failed", "run_id": run_id, "row": {**base, "reason": f"W&B API {exc}"}}
    except Exception as exc:  # noqa: BLE001 -- a non-transient API error excludes this run only
        return {"kind": "excluded", "row": {**base, "reason": f"W&B API error: {_describe(exc)}"}}


def _make_wandb_api(timeout: float) -> Any:
    try:
        import wandb

        # The key comes from WANDB_API_KEY or ~/.netrc, read by wandb itself; never touched here.
        return wandb.Api(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 -- any failure here means the same to the user
        raise DataSourceError(
            f"cannot connect to W&B ({_describe(exc)}); set WANDB_API_KEY or run `wandb login`"
        ) from None


def fetch_wandb_project(
    path: str,
    api: Any = None,
    previous_runs: pd.DataFrame | None = None,
    previous_history: pd.DataFrame | None = None,
    max_workers: int = 8,
    *,
    page_size: int = 1000,
    timeout: float = 60.0,
    max_retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    sleep: Callable[[float], Any] | None = None,
    progress: bool | None = None,
    key_patterns: Sequence[str] = NEEDED_KEY_PATTERNS,
    scan_each_key: bool = False,
) -> dict:
    """Fetch the runs of `entity/project` from a W&B server -> runs, history, excluded frames.

    Only the needed keys (`key_patterns`), unsampled (`scan_history`), one call per key family
    (`scan_each_key=True`: one call per key, for projects that log a family at mixed steps).
    Runs are fetched in parallel by at most `max_workers` threads, with a tqdm bar on stderr
    (default: only on a terminal). Transient errors (429, 5xx, timeouts) are retried with
    exponential backoff and jitter; other errors exclude the run with the reason. Incremental: a
    run whose state, last step and heartbeat equal those in `previous_runs` is not fetched again
    (its rows from `previous_history` are reused). Also returns n_fetched, n_reused and warnings.
    Raises SourceUnreachableError when listing the runs, or every run fetch, keeps failing.
    """
    from tqdm import tqdm

    path = path.strip().strip("/")
    prefix = f"wandb:{path}/"
    if api is None:
        api = _make_wandb_api(timeout)

    pause = sleep if sleep is not None else time.sleep  # injectable so tests need not wait

    def retry(func: Callable[[], Any]) -> Any:
        return _call_with_retries(func, max_retries=max_retries, backoff=backoff, max_backoff=max_backoff, sleep=pause)

    try:
        runs = retry(lambda: list(api.runs(path)))
    except _RetriesExhausted as exc:
        raise SourceUnreachableError(f"W&B source wandb:{path} unreachable: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- 401/403/404 and the like: one clear line
        raise DataSourceError(f"cannot list the runs of wandb:{path}: {_describe(exc)}") from None

    previous_by_id: dict[str, dict] = {}
    if previous_runs is not None and len(previous_runs) and previous_history is not None:
        mask = previous_runs["source"].astype(str).str.startswith(prefix)
        previous_by_id = {str(r["run_id"]): r for r in previous_runs[mask].to_dict("records")}

    results: list[dict] = []
    show = sys.stderr.isatty() if progress is None else progress
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(max_workers))) as pool:
        futures = [
            pool.submit(_fetch_api_run, run, path, previous_by_id.get(str(_run_attr(run, "id"))), retry,
                        page_size, key_patterns, scan_each_key)
            for run in runs
        ]
        with tqdm(total=len(futures), desc=f"wandb:{path}", unit="run", file=sys.stderr, disable=not show) as bar:
            for future in concurrent.futures.as_completed(futures):
                results.append(future.result())
                bar.update(1)

    failed = [r for r in results if r["kind"] == "failed"]
    attempted = [r for r in results if r["kind"] != "reused"]
    if attempted and len(failed) == len(attempted):
        raise SourceUnreachableError(
            f"W&B source wandb:{path} unreachable: all {len(failed)} run fetches failed "
            f"({failed[0]['row']['reason']})"
        )
    entries: list[dict] = []
    warnings_: list[str] = []
    reuse_ids = {r["run_id"] for r in results if r["kind"] == "reused"}
    for result in results:
        if result["kind"] == "failed" and result["run_id"] in previous_by_id:
            # a transient outage should not drop a run we already have: keep the old data, flagged
            reuse_ids.add(result["run_id"])
            warnings_.append(f"{result['row']['source']}: {result['row']['reason']}; kept the previous snapshot's data")
        elif result["kind"] == "failed":
            entries.append({"kind": "excluded", "row": result["row"]})
        elif result["kind"] != "reused":
            entries.append(result)
    stale = {r["run_id"] for r in results if r["kind"] == "failed"}
    if reuse_ids:
        grouped = dict(tuple(previous_history[previous_history["run_id"].astype(str).isin(reuse_ids)].groupby("run_id", sort=False)))
        for run_id in sorted(reuse_ids):
            row = {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in previous_by_id[run_id].items()
                   if k in RUNS_COLUMNS}
            if run_id in stale:
                row["flags"] = ";".join(f for f in [row.get("flags") or "", "stale"] if f)
            history = grouped.get(run_id, pd.DataFrame(columns=["run_id", "step"])).drop(columns="run_id")
            history = history.dropna(axis=1, how="all") if len(history) else history
            entries.append({"kind": "run", "row": row, "history": history.reset_index(drop=True)})
    frames = assemble_snapshot_frames(entries)
    return {**frames, "n_fetched": len(attempted) - len(failed), "n_reused": len(reuse_ids),
            "warnings": warnings_}


