"""The W&B server through the public API (`wandb.Api` and its wandb-core transport): only the
needed keys, unsampled, at the request floor (the listing, then one request per changed run:
sources/wandb_graphql.py), runs in parallel, bounded in time, incremental against the previous
snapshot (an unchanged run costs no request).

wandb (0.31) sends every request through its wandb-core sidecar, which retries 429, 5xx,
timeouts and dropped connections itself. That is the one retry layer: this module does not
retry on top of it, it configures it (the WANDB__GRAPHQL_* settings wandb honours) and bounds
each run's fetch and the whole fetch in time. A run whose fetch fails, whatever the error (5xx,
a timeout, a 400, a 200 that is not GraphQL), keeps its previous snapshot's data, flagged `stale`;
a run without previous data is excluded with the reason. When most runs fail, the source has
failed: an error, and no snapshot.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data.history import analysis_key_filter
from ..data.runs import (
    REASON_NO_VALIDATION,
    RUNS_COLUMNS,
    assemble_snapshot_frames,
    iso_utc,
    normalise_raw_run,
    normalise_run_state,
    run_metadata,
    unwrap_config_value,
)
from ..errors import (
    DataSourceError,
    SourceUnreachableError,
    WandbCredentialsError,
    WandbNotFoundError,
)
from . import wandb_graphql as gq
from .wandb_limits import (
    WandbLimits,
    _describe,
    classify_error,
    http_status,
    is_transient_error,
    run_bounded,
    wandb_limits,
)

# the logger the command line prints as `warning: ...` lines
_LOG = logging.getLogger("cbs_rlvr.data")




# --------------------------------------------------------------------------------------------
# Which keys, in how many scans
# --------------------------------------------------------------------------------------------
def needed_keys(available: Iterable[str], patterns: Sequence[str] = ()) -> list[str]:
    """The keys among `available` the analysis needs, sorted: the same rule as every source's
    (`history.analysis_key_filter`), with `patterns` added."""
    keep = analysis_key_filter(tuple(patterns))
    return sorted({k for k in available if keep(k)})


def history_key_groups(keys: Iterable[str], counts: Mapping[str, int] | None = None) -> list[list[str]]:
    """Split keys into groups logged together, one sampledHistory spec each.

    On live history a spec returns only rows in which *all* its keys are present, so keys
    logged at different steps must not share a spec: validation keys (every test_freq steps)
    must not be asked with per-step training keys. (Exported parquet history has every step,
    with None for the keys a step lacks.) With `counts` (how many history rows hold each key,
    from the run's historyKeys) keys logged equally often form one group: for verl, one spec
    for the per-step keys and one for the validation keys. The fetch checks each key's count in
    the rows and asks again key by key if keys of equal counts were not logged together. Keys
    without a count are grouped by family (the part before the first '/'): verl logs each
    family from one place.
    """
    counts = counts or {}
    groups: dict[Any, list[str]] = {}
    for key in sorted(keys):
        group = ("count", counts[key]) if counts.get(key) else ("family", key.split("/", 1)[0])
        groups.setdefault(group, []).append(key)
    return list(groups.values())


def _history_key_counts(history_keys: Any) -> dict[str, int]:
    """key -> number of history rows holding it, from a run's `historyKeys` ({} if absent).

    W&B's form: {"keys": {key: {"typeCounts": [{"type": "number", "count": N}, ...]}}, "lastStep": S}.
    """
    keys = history_keys.get("keys") if isinstance(history_keys, Mapping) else None
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


def _api_run_status(node: Mapping) -> dict:
    """state, last step (historyKeys.lastStep) and heartbeat of a listed run: all the incremental
    check needs, so an unchanged run costs no request."""
    history_keys = node.get("historyKeys") if isinstance(node.get("historyKeys"), Mapping) else {}
    last_step = history_keys.get("lastStep")
    return {
        "state": normalise_run_state(node.get("state")),
        "wandb_last_step": (int(last_step) if isinstance(last_step, numbers.Real) and not isinstance(last_step, bool)
                            and last_step >= 0 else None),
        # W&B runs have no update time; the heartbeat is the last time the run wrote anything
        "updated_at": iso_utc(node.get("heartbeatAt")),
    }


def _same_status(previous: Mapping, status: Mapping) -> bool:
    def norm(value: Any) -> Any:
        return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value

    return (norm(previous.get("state")) == status["state"]
            and norm(previous.get("updated_at")) == status["updated_at"]
            and status["wandb_last_step"] is not None
            and norm(previous.get("wandb_last_step")) is not None
            and int(previous["wandb_last_step"]) == status["wandb_last_step"])


def _fetch_api_run(node: Mapping, path: str, previous: Mapping | None, page_size: int,
                   patterns: Sequence[str], scan_each_key: bool, call: gq.GraphQL,
                   get: Callable[[str], bytes]) -> dict:
    """One listed W&B run -> a run entry, an exclusion, {"kind": "reused"} or {"kind": "failed"}."""
    run_id = str(node.get("name") or node.get("id"))
    source = f"wandb:{path}/{run_id}"
    base = {"source": source, "run_id": run_id, "name": node.get("displayName")}
    try:
        status = _api_run_status(node)
        if previous is not None and _same_status(previous, status):
            return {"kind": "reused", "run_id": run_id}
        config = {k: unwrap_config_value(v) for k, v in gq.run_config(node).items() if not k.startswith("_wandb")}
        meta = run_metadata(base["name"], config)
        if meta["reason"]:
            return {"kind": "excluded", "row": {**base, "reason": meta["reason"]}}
        history_keys = node.get("historyKeys") if isinstance(node.get("historyKeys"), Mapping) else {}
        counts = _history_key_counts(history_keys)
        available = set(counts) or {str(k) for k in (history_keys.get("keys") or {})}
        keys = needed_keys(available, patterns)
        if not any(k.startswith("val-core/") for k in keys):
            return {"kind": "excluded", "row": {**base, "reason": REASON_NO_VALIDATION}}
        groups = [[k] for k in keys] if scan_each_key else history_key_groups(keys, counts)
        last_step = status["wandb_last_step"]
        if last_step is None:
            last_step = max(0, int(node.get("historyLineCount") or 0) - 1)
        entity, project = path.split("/", 1)
        rows, short = gq.fetch_history(call, entity, project, run_id, groups, last_step, counts, page_size, get)
        tags = node.get("tags")
        raw = {
            **base,
            "config": config,
            "state": status["state"],
            "rows": rows,
            "start_time": node.get("createdAt"),
            "updated_at": status["updated_at"],
            "wandb_last_step": status["wandb_last_step"],
            "tags": [str(t) for t in tags] if isinstance(tags, (list, tuple)) else [],
            "group": str(node["group"]) if node.get("group") is not None else None,
        }
        flags: list[str] = []
        if short:  # the server sampled this run's history away and would not give the rest
            flags.append(f"history_incomplete:{sum(n - got for got, n in short.values())}")
        raw["flags"] = flags
        entry = normalise_raw_run(raw, key_patterns=patterns)
        if short:
            key, (got, n) = max(short.items(), key=lambda item: item[1][1] - item[1][0])
            entry["warning"] = (f"{source}: W&B served {got} of the {n} logged values of {key}, even "
                                "in small windows (history sampled by the server); kept, flagged "
                                "history_incomplete")
        return entry
    except Exception as exc:  # noqa: BLE001 -- whatever the error: the previous data are kept
        # a listed run the server does not serve (5xx, 400, a 200 that is an HTML page, a 404
        # for a run it just listed) is a failed fetch, never a reason to lose the run's data
        return {"kind": "failed", "run_id": run_id, "transient": is_transient_error(exc),
                "row": {**base, "reason": f"W&B API: {_describe(exc)}"}}


# --------------------------------------------------------------------------------------------
# Connecting and listing: errors that say what to do
# --------------------------------------------------------------------------------------------
def _base_url() -> str:
    url = os.environ.get("WANDB_BASE_URL", "").strip()
    if url:
        return url.rstrip("/")
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url).rstrip("/")
    except Exception:  # noqa: BLE001 -- only used in messages
        return "the W&B server"


def _has_credentials(base_url: str) -> bool | None:
    """Whether wandb will find an API key for base_url without prompting (None: cannot tell)."""
    if os.environ.get("WANDB_API_KEY", "").strip() or os.environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    try:
        from wandb.sdk.lib import wbauth

        return wbauth.authenticate_session(host=base_url, source="cbs_rlvr", no_offline=True, prompt=False,
                                           update_session=False) is not None
    except Exception:  # noqa: BLE001 -- another wandb version: let wandb.Api() decide
        return None


def _configure_wandb(limits: WandbLimits) -> None:
    """Hand the retry settings to wandb (global to this process: wandb reads its environment
    only once, so a later change of WANDB__GRAPHQL_* would otherwise be ignored)."""
    import wandb

    try:
        settings = wandb.Settings(
            x_graphql_retry_max=limits.graphql_retry_max,
            x_graphql_retry_wait_min_seconds=limits.graphql_retry_wait_min,
            x_graphql_retry_wait_max_seconds=limits.graphql_retry_wait_max,
            x_graphql_timeout_seconds=limits.graphql_timeout,
        )
    except (TypeError, ValueError) as exc:  # a wandb without these settings
        _LOG.warning("wandb %s ignores the WANDB__GRAPHQL_* settings (%s)", wandb.__version__, exc)
        return
    try:
        wandb.setup(settings=settings)
    except Exception as exc:  # noqa: BLE001 -- only the case below is handled
        if "ServiceConnection" not in type(exc).__name__ or not os.environ.get("WANDB_SERVICE"):
            raise
        # WANDB_SERVICE names the wandb-core of a process that is gone (inherited from a training
        # script, or left by an earlier wandb in this process): start this process's own
        os.environ.pop("WANDB_SERVICE", None)
        wandb.teardown()
        wandb.setup(settings=settings)


def _source_error(exc: BaseException, path: str, base_url: str, doing: str) -> DataSourceError:
    """The one-line error for a failure to connect or to list the runs."""
    entity = path.split("/", 1)[0]
    status = http_status(exc)
    detail = _describe(exc)
    kind = classify_error(exc)
    if kind == "auth" and status == 403:
        return WandbCredentialsError(
            f"the W&B API key has no access to entity {entity!r} at {base_url} (HTTP 403) while {doing}; "
            f"check the entity name and your membership ({detail})")
    if kind == "auth":
        return WandbCredentialsError(
            f"W&B at {base_url} rejected the API key (HTTP {status}) while {doing}; set a valid WANDB_API_KEY "
            f"or run `wandb login --relogin` ({detail})")
    if kind == "not_found":
        return WandbNotFoundError(f"no W&B project {path} at {base_url} (HTTP 404); check the entity and "
                                  f"project names in SOURCE=wandb:<entity>/<project> ({detail})")
    if kind == "transient":
        return SourceUnreachableError(f"W&B at {base_url} unreachable while {doing} ({detail}); "
                                      "no snapshot written, the previous one is kept")
    return DataSourceError(f"W&B error while {doing} wandb:{path}: {detail}")


def _make_wandb_api(timeout: float, path: str = "") -> Any:
    """A wandb.Api for WANDB_BASE_URL, with `timeout` s for each request to wait on wandb-core.
    wandb.Api() already asks the server who the key belongs to: its errors are classified here."""
    base_url = _base_url()
    no_key = f"no W&B API key for {base_url}: set WANDB_API_KEY or run `wandb login`" + (
        "" if base_url.endswith(("api.wandb.ai", "forge.coreweave.com")) else f" --host {base_url}")
    if _has_credentials(base_url) is False:
        raise WandbCredentialsError(no_key)
    import wandb

    try:
        # The key comes from WANDB_API_KEY or ~/.netrc, read by wandb itself; never touched here.
        return wandb.Api(timeout=max(1, math.ceil(timeout)))
    except Exception as exc:  # noqa: BLE001 -- classified into one clear line
        text = str(exc)
        if "No API key" in text or "No authentication" in text:
            raise WandbCredentialsError(no_key) from None
        if type(exc).__name__ == "AuthenticationError" and classify_error(exc) == "permanent":
            raise WandbCredentialsError(f"the W&B API key is not usable for {base_url} ({_describe(exc)}); set a "
                                        "valid WANDB_API_KEY or run `wandb login --relogin`") from None
        raise _source_error(exc, path, base_url, "checking the API key") from None


def _list_runs(call: gq.GraphQL, path: str) -> list[dict]:
    """A fresh listing (pages of 50 runs, each with config and historyKeys)."""
    entity, project = path.split("/", 1)
    return gq.list_runs(call, entity, project)


# --------------------------------------------------------------------------------------------
# The fetch
# --------------------------------------------------------------------------------------------
def fetch_wandb_project(
    path: str,
    api: Any = None,
    previous_runs: pd.DataFrame | None = None,
    previous_history: pd.DataFrame | None = None,
    max_workers: int = 8,
    *,
    page_size: int = 1000,
    limits: WandbLimits | None = None,
    progress: bool | None = None,
    key_patterns: Sequence[str] = (),
    scan_each_key: bool = False,
) -> dict:
    """Fetch the runs of `entity/project` from a W&B server -> runs, history, excluded frames.

    Only the keys the analysis reads (`history.analysis_key_filter`, plus `key_patterns`, e.g. the
    phases' metric patterns), unsampled, grouped by how often they were logged
    (`scan_each_key=True`: one spec per key), at the request floor (sources/wandb_graphql.py): the
    listing, then one request per changed run (plus the parquet files of exported history when
    the server's sampledHistory does not serve it). Runs are fetched in parallel by at most
    `max_workers` threads, with a tqdm bar on stderr (default: only on a terminal). `limits`
    (default: `wandb_limits()` from the environment) bound each run and the whole fetch; wandb-core
    retries transient errors. A run whose fetch fails, whatever the error (429, 5xx, timeout, no
    answer within the run's bound, a 400, an answer that is not GraphQL) keeps its data from
    `previous_runs`/`previous_history`, flagged `stale`, with a warning; without previous data
    it is excluded with the reason. Incremental: a run whose state, last step and heartbeat
    equal those in `previous_runs` is not fetched again. Also returns n_fetched, n_reused and
    warnings.

    Raises WandbCredentialsError (no key, key rejected, no access to the entity),
    WandbNotFoundError (no such project), SourceUnreachableError (W&B unreachable, or most of the
    runs fetched failed with transient errors) or DataSourceError (most of them failed, some
    with other errors), each with a one-line message: a server failing most runs never turns
    into a snapshot with fewer runs.
    """
    from tqdm import tqdm

    path = path.strip().strip("/")
    prefix = f"wandb:{path}/"
    limits = limits or wandb_limits()
    call, get, base_url = _clients(path, api, limits)
    try:
        runs = _list_runs(call, path)
    except Exception as exc:  # noqa: BLE001 -- classified into one clear line
        raise _source_error(exc, path, base_url, f"listing the runs of wandb:{path}") from None

    previous_by_id = _previous_by_id(previous_runs, previous_history, prefix)

    def job(node: dict) -> Callable[[], dict]:
        run_id = str(node.get("name") or node.get("id"))
        return lambda: _fetch_api_run(node, path, previous_by_id.get(run_id), page_size, key_patterns, scan_each_key,
                                      call, get)

    def timed_out(index: int, why: str) -> dict:
        node = runs[index]
        run_id = str(node.get("name") or node.get("id"))
        row = {"source": f"{prefix}{run_id}", "run_id": run_id, "name": node.get("displayName"),
               "reason": f"W&B API: {why}"}
        return {"kind": "failed", "run_id": run_id, "row": row}

    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(runs), desc=f"wandb:{path}", unit="run", file=sys.stderr, disable=not show) as bar:
        results = run_bounded([job(run) for run in runs], max_workers=max(1, int(max_workers)),
                              run_timeout=limits.run_timeout, total_timeout=limits.total_timeout,
                              timed_out=timed_out, done=lambda: bar.update(1))

    _raise_if_the_server_failed(results, base_url, path)
    return _assemble(results, previous_by_id, previous_history, path)


def _clients(path: str, api: Any, limits: WandbLimits):
    """The GraphQL caller, the file getter and the server's address of a fetch."""
    base_url = _base_url()
    if api is None:
        _configure_wandb(limits)
        api = _make_wandb_api(limits.run_timeout, path)
    else:
        base_url = str(getattr(api, "settings", {}).get("base_url") or base_url)
    call = gq.graphql_caller(api, timeout=max(1, math.ceil(limits.run_timeout)))
    get = gq.http_getter(timeout=limits.graphql_timeout, retries=limits.graphql_retry_max,
                         wait_max=limits.graphql_retry_wait_max)
    return call, get, base_url


def _previous_by_id(previous_runs, previous_history, prefix: str) -> dict[str, dict]:
    """The previous snapshot's runs of this project by run id ({} without a previous history)."""
    if previous_runs is None or not len(previous_runs) or previous_history is None:
        return {}
    mask = previous_runs["source"].astype(str).str.startswith(prefix)
    return {str(r["run_id"]): r for r in previous_runs[mask].to_dict("records")}


def _raise_if_the_server_failed(results: list, base_url: str, path: str) -> None:
    """Most runs failing is the server failing, not the runs: nothing of it enters the snapshot."""
    failed = [r for r in results if r["kind"] == "failed"]
    attempted = sum(1 for r in results if r["kind"] != "reused")
    if failed and 2 * len(failed) > attempted:
        error = SourceUnreachableError if all(r.get("transient", True) for r in failed) else DataSourceError
        how = "unreachable" if error is SourceUnreachableError else "answered with errors"
        count = f"all {len(failed)}" if len(failed) == attempted else f"{len(failed)} of {attempted}"
        raise error(f"W&B at {base_url} {how}: {count} runs of wandb:{path} failed "
                    f"({failed[0]['row']['reason'].removeprefix('W&B API: ')}); no snapshot written, "
                    "the previous one is kept")


def _reused_histories(previous: pd.DataFrame) -> Callable[[str], pd.DataFrame]:
    """history(run_id): a reused run's rows of the previous snapshot, without run_id and without
    the columns it never logged. A snapshot's history is sorted by run id, so each run is one
    slice and what it logged is one pass over the table (a warm fetch of hundreds of unchanged
    runs otherwise spends its time splitting the table and testing every column per run)."""
    ids = previous["run_id"].astype(str).to_numpy()
    columns = [c for c in previous.columns if c != "run_id"]
    cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    bounds = np.r_[0, cuts, len(ids)] if len(ids) else np.array([0])
    spans = {ids[a]: (a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)}
    if len(bounds) - 1 != len(spans):  # not one slice per run (not a snapshot's order): sort it
        order = np.argsort(ids, kind="stable")
        return _reused_histories(previous.iloc[order].reset_index(drop=True))
    logged = previous[columns].notna().to_numpy()
    empty = pd.DataFrame(columns=["step"])

    def history(run_id: str) -> pd.DataFrame:
        a, b = spans.get(run_id, (0, 0))
        if b <= a:
            return empty.copy()
        kept = [c for c, any_ in zip(columns, logged[a:b].any(axis=0), strict=True) if any_]
        return previous.iloc[a:b][kept].reset_index(drop=True)

    return history


def _assemble(results: list[dict], previous_by_id: dict[str, dict], previous_history: pd.DataFrame | None,
              path: str) -> dict:
    """Fetched, reused and failed runs -> the snapshot frames, n_fetched, n_reused, warnings."""
    entries: list[dict] = []
    warnings_: list[str] = []
    reuse_ids = {r["run_id"] for r in results if r["kind"] == "reused"}
    stale: set[str] = set()
    lost: list[str] = []
    for result in results:
        if result.get("warning"):
            warnings_.append(result["warning"])
        if result["kind"] == "failed" and result["run_id"] in previous_by_id:
            # a transient outage should not drop a run we already have: keep the old data, flagged
            reuse_ids.add(result["run_id"])
            stale.add(result["run_id"])
            warnings_.append(f"{result['row']['source']}: {result['row']['reason']}; kept the previous "
                             "snapshot's data (flagged stale)")
        elif result["kind"] == "failed":
            lost.append(result["run_id"])
            entries.append({"kind": "excluded", "row": result["row"]})
        elif result["kind"] != "reused":
            entries.append(result)
    incomplete = [r for r in results if r.get("warning")]
    if incomplete:
        _LOG.warning("wandb:%s: %d run(s) with history sampled by the server, kept and flagged "
                     "history_incomplete (%s)", path, len(incomplete), incomplete[0]["warning"])
    if stale or lost:
        example = next(r["row"]["reason"] for r in results if r["kind"] == "failed")
        _LOG.warning("wandb:%s: %d of %d runs could not be fetched (%s): %s", path,
                     len(stale) + len(lost), len(results), example,
                     "; ".join(filter(None, [f"{len(stale)} kept from the previous snapshot, flagged stale"
                                             if stale else "", f"{len(lost)} listed in excluded_runs.csv"
                                             if lost else ""])))
    if reuse_ids:
        reused_history = _reused_histories(previous_history)
        for run_id in sorted(reuse_ids):
            row = {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in previous_by_id[run_id].items()
                   if k in RUNS_COLUMNS}
            flags = [f for f in str(row.get("flags") or "").split(";") if f and f != "stale"]
            if run_id in stale:
                flags.append("stale")  # (an unchanged run reused as it is is up to date: no flag)
            row["flags"] = ";".join(flags)
            history = reused_history(run_id)
            entries.append({"kind": "run", "row": row, "history": history})
    frames = assemble_snapshot_frames(entries)
    n_failed = sum(1 for r in results if r["kind"] == "failed")
    n_attempted = sum(1 for r in results if r["kind"] != "reused")
    return {**frames, "n_fetched": n_attempted - n_failed, "n_reused": len(reuse_ids), "warnings": warnings_}
