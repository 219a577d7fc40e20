"""The W&B server's GraphQL at its request floor: the queries the fetch sends, through wandb's own
transport (`wandb.Api()._service_api.execute_graphql`, i.e. wandb-core: its auth, its retries,
its error types), and the history read UNSAMPLED.

Requests per run (wandb 0.31's own `scan_history` sends 4-5 per key group):
  listing    `CbsRuns`, 50 runs a page: the light fields (state, heartbeat, historyLineCount),
             config and historyKeys (key -> logged count, lastStep). An unchanged run costs
             nothing more; the listing says everything the incremental check needs.
  history    `CbsRunHistory`, one per run: `parquetHistory` (the exported files' URLs, the live
             steps) and `sampledHistory` with one spec per key group and step window.
  parquet    one GET per exported file, only when the specs did not bring every logged value
             (on a server whose sampledHistory serves only live steps).

How sampledHistory samples (wandb-core's runhistoryreader/livedata.go): each spec returns at
most `samples` rows of the steps minStep..maxStep (inclusive) holding all of its keys, sampled
when there are more. A window of `page_size` steps with `samples = page_size` therefore comes
back whole: every step, never sampled. The fetch checks each key's values against the count in
historyKeys and asks again key by key if a joint spec dropped rows (keys logged equally often
but at different steps), and in smaller windows if the server sampled a window all the same (a
server that caps `samples`); a key still short is reported (the run is flagged), never taken for
the whole history.
"""

from __future__ import annotations

import io
import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

RUN_FIELDS = """id name displayName state group tags createdAt heartbeatAt historyLineCount config historyKeys"""

LISTING_QUERY = f"""query CbsRuns($project: String!, $entity: String!, $cursor: String, $perPage: Int = 50,
                   $order: String, $filters: JSONString) {{
  project(name: $project, entityName: $entity) {{
    runCount(filters: $filters)
    runs(filters: $filters, after: $cursor, first: $perPage, order: $order) {{
      edges {{ node {{ {RUN_FIELDS} }} cursor }}
      pageInfo {{ endCursor hasNextPage }}
    }}
  }}
}}"""

HISTORY_QUERY = """query CbsRunHistory($project: String!, $entity: String!, $name: String!, $specs: [JSONString!]!) {
  project(name: $project, entityName: $entity) {
    run(name: $name) {
      parquetHistory(liveKeys: ["_step"]) { parquetUrls liveData }
      sampledHistory(specs: $specs)
    }
  }
}"""

SPECS_ONLY_QUERY = """query CbsRunHistorySpecs($project: String!, $entity: String!, $name: String!, $specs: [JSONString!]!) {
  project(name: $project, entityName: $entity) {
    run(name: $name) { sampledHistory(specs: $specs) }
  }
}"""

# rows one request may carry at most (specs x page_size): a 10,000-step run in one request
ROWS_PER_REQUEST = 20_000


class ProjectNotFound(LookupError):
    """The listing answered `project: null` (no such project, or no access)."""


class RunNotFound(LookupError):
    """A run query answered `run: null` (deleted since the listing)."""


GraphQL = Callable[[str, Mapping[str, Any]], Any]


def graphql_caller(api: Any, timeout: float | None = None) -> GraphQL:
    """(query, variables) -> the answer's `data`, through wandb's own transport: wandb-core (0.31+:
    `api._service_api.execute_graphql`) or, on an older wandb, `api.client.execute(gql(query))`."""
    service = getattr(api, "_service_api", None)
    if service is not None and callable(getattr(service, "execute_graphql", None)):
        def call(query: str, variables: Mapping[str, Any]) -> Any:
            return service.execute_graphql(query, dict(variables), timeout=timeout)
        return call
    client = getattr(api, "client", None)
    if client is not None and callable(getattr(client, "execute", None)):
        from wandb_gql import gql  # the gql wandb vendors (wandb < 0.30)

        def call_legacy(query: str, variables: Mapping[str, Any]) -> Any:
            return client.execute(gql(query), variable_values=dict(variables))
        return call_legacy
    raise TypeError(f"{type(api).__name__} has neither wandb-core's execute_graphql nor a GraphQL client")


# --------------------------------------------------------------------------------------------
# The listing
# --------------------------------------------------------------------------------------------
def _json_field(value: Any) -> Any:
    """config / historyKeys arrive as JSON strings (JSONString scalars) or already decoded."""
    if isinstance(value, (str, bytes, bytearray)):
        try:
            return json.loads(value)
        except ValueError:
            return json.loads(value, strict=False)
    return value


def list_runs(call: GraphQL, entity: str, project: str, per_page: int = 50) -> list[dict]:
    """Every run of the project (oldest first), as the listing's nodes with config and
    historyKeys decoded. Raises ProjectNotFound when the server knows no such project."""
    nodes: list[dict] = []
    cursor = None
    while True:
        data = call(LISTING_QUERY, {"entity": entity, "project": project, "cursor": cursor, "perPage": per_page,
                                    "order": "+created_at", "filters": json.dumps({})})
        found = (data or {}).get("project")
        if found is None:
            raise ProjectNotFound(f"Could not find project {entity}/{project}")
        runs = found.get("runs") or {}
        for edge in runs.get("edges") or []:
            node = dict(edge.get("node") or {})
            node["config"] = _json_field(node.get("config")) or {}
            node["historyKeys"] = _json_field(node.get("historyKeys")) or {}
            nodes.append(node)
        page = runs.get("pageInfo") or {}
        if not page.get("hasNextPage") or not page.get("endCursor"):
            return nodes
        cursor = page["endCursor"]


def run_config(node: Mapping) -> dict:
    """The user config of a listed run, as wandb.Api's Run.config gives it: {"value": v} unwrapped,
    wandb's internal keys left out."""
    config = node.get("config") if isinstance(node.get("config"), Mapping) else {}
    return {str(k): (v["value"] if isinstance(v, Mapping) and "value" in v else v) for k, v in config.items()
            if k not in ("_wandb", "wandb_version")}


# --------------------------------------------------------------------------------------------
# The history: specs, parquet, completeness
# --------------------------------------------------------------------------------------------
def history_specs(groups: Sequence[Sequence[str]], last_step: int, page_size: int) -> list[str]:
    """One sampledHistory spec per key group and window of `page_size` steps, each asking for as
    many samples as the window has steps: nothing is sampled away."""
    page_size = max(1, int(page_size))
    specs = []
    for group in groups:
        for lo in range(0, max(0, int(last_step)) + 1, page_size):
            specs.append(json.dumps({"keys": ["_step", *[k for k in group if k != "_step"]], "minStep": lo,
                                     "maxStep": lo + page_size - 1, "samples": page_size}))
    return specs


def _chunks(specs: list[str], page_size: int) -> list[list[str]]:
    per_request = max(1, ROWS_PER_REQUEST // max(1, int(page_size)))
    return [specs[i:i + per_request] for i in range(0, len(specs), per_request)] or [[]]


def _run_of(data: Any, name: str) -> dict:
    run = ((data or {}).get("project") or {}).get("run")
    if run is None:
        raise RunNotFound(f"run {name} not found (HTTP 404)")
    return run


def _add_rows(rows_by_step: dict[int, dict], rows: Iterable[Any]) -> None:
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        step = row.get("_step")
        if not isinstance(step, numbers.Real) or isinstance(step, bool) or not math.isfinite(step):
            continue
        kept = {str(k): v for k, v in row.items() if v is not None and k != "_step"}
        if kept:
            rows_by_step.setdefault(int(step), {"_step": int(step)}).update(kept)


def read_parquet_rows(urls: Sequence[str], keys: Sequence[str], get: Callable[[str], bytes]) -> list[dict]:
    """The rows of exported history files, only `_step` and `keys` read (None where a step lacks a
    key, dropped by the caller)."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for url in urls:
        handle = pq.ParquetFile(io.BytesIO(get(url)))
        names = set(handle.schema_arrow.names)
        columns = [c for c in dict.fromkeys(["_step", *keys]) if c in names]
        if "_step" not in columns:
            continue
        table = handle.read(columns=columns)  # only the needed columns are decoded
        data = {c: table.column(c).to_pylist() for c in columns}
        for c in columns:
            if c != "_step" and table.schema.field(c).type == "string":
                data[c] = [_loads_value(v) if isinstance(v, str) else v for v in data[c]]
        rows.extend(dict(zip(columns, values, strict=True)) for values in zip(*data.values(), strict=True))
    return rows


def _loads_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class HistoryFileError(Exception):
    """A failed download of an exported history file; the message names no URL (a signed URL's
    query is a credential)."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def http_getter(timeout: float, retries: int, wait_max: float) -> Callable[[str], bytes]:
    """GET of a (signed) parquet URL: no credentials sent; 429, 5xx and dropped connections retried
    `retries` times (Retry-After honoured up to `wait_max` s), then HistoryFileError raised."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=retries, backoff_factor=0.5, backoff_max=wait_max, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET",), raise_on_status=False, respect_retry_after_header=True)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))

    def get(url: str) -> bytes:
        where = "the exported history file " + url.split("?", 1)[0].rsplit("/", 1)[-1]
        failure = None
        try:
            response = session.get(url, timeout=timeout)
        except requests.Timeout:
            failure = HistoryFileError(f"timed out downloading {where}")
        except requests.RequestException as exc:
            failure = HistoryFileError(f"error sending request for {where} ({type(exc).__name__})")
        if failure is not None:  # raised here, so no exception with the URL is chained to it
            raise failure
        if response.status_code >= 400:
            reason = " ".join(str(response.reason or "").split())[:80]
            raise HistoryFileError(f"HTTP {response.status_code}: {reason} downloading {where}", response.status_code)
        return response.content
    return get


def _ask(call: GraphQL, entity: str, project: str, name: str, groups: Sequence[Sequence[str]], last_step: int,
         page_size: int, rows_by_step: dict[int, dict], first_query: str | None = None) -> tuple[dict, int]:
    """Ask sampledHistory for `groups` in windows of `page_size` steps, adding the rows to
    rows_by_step -> (the first answer's run, the most rows one spec brought back)."""
    first: dict = {}
    largest = 0
    for i, chunk in enumerate(_chunks(history_specs(groups, last_step, page_size), page_size)):
        query = first_query if i == 0 and first_query else SPECS_ONLY_QUERY
        run = _run_of(call(query, {"entity": entity, "project": project, "name": name, "specs": chunk}), name)
        first = first or run
        for rows in run.get("sampledHistory") or []:
            largest = max(largest, len(rows or []))
            _add_rows(rows_by_step, rows or [])
    return first, largest


def _counted(rows_by_step: Mapping[int, dict], keys: Iterable[str], counts: Mapping[str, int]) -> dict[str, tuple]:
    """key -> (values received, values logged) of the keys that came back short."""
    have: dict[str, int] = {}
    for row in rows_by_step.values():
        for key in row:
            have[key] = have.get(key, 0) + 1
    return {k: (have.get(k, 0), counts[k]) for k in keys if have.get(k, 0) < counts.get(k, 0)}


def fetch_history(call: GraphQL, entity: str, project: str, name: str, groups: Sequence[Sequence[str]],
                  last_step: int, counts: Mapping[str, int], page_size: int,
                  get: Callable[[str], bytes]) -> tuple[list[dict], dict[str, tuple[int, int]]]:
    """Every logged value of the keys in `groups` of one run, in step order (rows of `_step` and
    the keys a step has), and the keys that still came back short of historyKeys' count
    ({key: (received, logged)}, empty when the history is whole).

    One request for a run of up to ROWS_PER_REQUEST / n_groups steps; the exported parquet files
    only when the specs left values out; one more request, key by key, only when a joint spec
    dropped rows; and, when a server samples a window all the same (it caps the samples a spec
    may ask), the short keys once more in windows no larger than the most rows a spec brought
    back. What is still short then is reported, never passed off as the whole history."""
    rows_by_step: dict[int, dict] = {}
    run, largest = _ask(call, entity, project, name, groups, last_step, page_size, rows_by_step, HISTORY_QUERY)
    parquet = run.get("parquetHistory") or {}
    keys = sorted({k for group in groups for k in group if k != "_step"})
    urls = [u for u in parquet.get("parquetUrls") or [] if isinstance(u, str) and u]
    live = [d.get("_step") for d in parquet.get("liveData") or [] if isinstance(d, Mapping)]
    first_live = min((s for s in live if isinstance(s, numbers.Real)), default=math.inf)
    if urls and not any(step < first_live for step in rows_by_step) and (not counts or _counted(rows_by_step, keys, counts)):
        # this server's sampledHistory serves only live steps: read the exported ones from the files
        _add_rows(rows_by_step, read_parquet_rows(urls, keys, get))
    short = _counted(rows_by_step, keys, counts) if counts else {}
    joint = [k for group in groups if len(group) > 1 for k in group if k in short]
    if joint:
        # keys logged equally often but not at the same steps: the joint spec dropped rows
        _, more = _ask(call, entity, project, name, [[k] for k in joint], last_step, page_size, rows_by_step)
        largest = max(largest, more)
        short = _counted(rows_by_step, keys, counts)
    window = min(page_size, largest) // 2
    if short and window >= 1:
        # the server sampled windows it was asked for whole: ask again in smaller ones
        _ask(call, entity, project, name, [[k] for k in short], last_step, window, rows_by_step)
        short = _counted(rows_by_step, keys, counts)
    return [rows_by_step[s] for s in sorted(rows_by_step)], short
