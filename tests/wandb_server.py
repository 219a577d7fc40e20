"""A local W&B-compatible HTTP endpoint that the REAL `wandb.Api` talks to (via WANDB_BASE_URL).

wandb 0.31 sends all public-API traffic through its wandb-core sidecar (Go), so this is a plain
HTTP server: stdlib `http.server` on 127.0.0.1 only, a bounded lifetime (it stops itself), runs
served as live history or as exported parquet history, and failures injected on request.

What wandb 0.31 sends, identified by the query text (the Python side sends no operationName):
  Viewer              on `wandb.Api()` (wandb-core verifies the key)
  GetDefaultEntity    on `api.runs()` unless WANDB_ENTITY is set
  Runs                project.runs, paginated (perPage 50), the light run fields
  Run                 one run: config and summaryMetrics as JSON strings, historyKeys
  RunHistoryKeys      `run.lastHistoryStep` (also once per `scan_history`)
  RunParquetHistory   parquetUrls + liveData (the steps not yet exported), per `scan_history`
  SampledHistoryPage  `scan_history(keys=...)` pages of live history: spec JSON with keys,
                      minStep, maxStep (inclusive), samples; rows holding ALL the keys
  HistoryPage         `scan_history()` without keys: maxStep exclusive, every key
and what the project sends (cbs_rlvr/sources/wandb_graphql.py), answered by the fields asked:
  CbsRuns             the listing with config and historyKeys
  CbsRunHistory       one run's parquetHistory and sampledHistory with several specs
  CbsRunHistorySpecs  sampledHistory only (more windows, or keys one by one)
sampledHistory samples as W&B does: at most `samples` rows per spec, evenly spaced, so a test
can tell sampled from whole history; `max_samples` caps what a spec may ask (a server's limit)
and `sampled_share` < 1 samples every window whatever it asks (a server that never gives it
all). Whether it serves exported steps too (`sampled_serves_export`, as the W&B server's charts
suggest) or only live ones (as wandb-core assumes, reading exported steps from parquet) is the
server's option: the fetch is tested on both. `fail(..., status=200, body=...)` answers with any
page (an HTML login or proxy page where GraphQL was expected).
plus HEAD and ranged GET on the parquet URLs and POSTs to /sdk/otel/v1/metrics (404 here).
The response shapes follow wandb's own source (wandb/apis/public/runs.py and wandb-core's
core/api/graphql/*.graphql). Exported parquet history returns every step of the file with
None for the keys a step lacks; live history drops the rows that lack a requested key.

    with WandbServer(runs=[ServedRun(...)]) as server:
        env = server.client_env()          # WANDB_BASE_URL, a 40-char WANDB_API_KEY, ...
        server.fail("Run", run="r1", status=503)            # every Run query of r1 -> 503
        server.fail("SampledHistoryPage", status=429, retry_after=1, times=2)
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

API_KEY = "cbstest0" + "0123456789abcdef" * 2  # 40 characters, like a real W&B key
_OPERATION = re.compile(r"\b(?:query|mutation)\s+(\w+)")
# what wandb itself sends, answered by name (the first three need no run)
_WANDB_OPERATIONS = ("Viewer", "GetDefaultEntity", "Runs", "Run", "RunHistoryKeys", "RunParquetHistory",
                     "SampledHistoryPage", "HistoryPage")


@dataclass
class ServedRun:
    """One run as the server holds it. `rows` are history rows in step order, each with `_step`.

    exported_until: None -> all history is live; k -> steps < k are in an exported parquet
    file and the rest is live (the server's usual state for a long run); use
    `exported_until=math.inf` for a fully exported run.
    """

    run_id: str
    name: str
    config: dict
    rows: list[dict]
    state: str = "finished"
    created_at: str = "2026-01-01T00:00:00Z"
    heartbeat_at: str = "2026-01-01T10:00:00Z"
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    exported_until: float | None = None
    summary: dict | None = None
    notes: str | None = None

    @property
    def last_step(self) -> int:
        return max((int(r["_step"]) for r in self.rows), default=-1)

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def history_keys(self) -> dict:
        """W&B's historyKeys: {"keys": {key: {"typeCounts": [...]}}, "lastStep": N}."""
        counts: dict[str, Counter] = {}
        for row in self.rows:
            for key, value in row.items():
                kind = ("number" if isinstance(value, (int, float)) and not isinstance(value, bool)
                        else "string" if isinstance(value, str) else "other")
                counts.setdefault(key, Counter())[kind] += 1
        return {"keys": {k: {"typeCounts": [{"type": t, "count": n} for t, n in sorted(c.items())]}
                         for k, c in sorted(counts.items())},
                "lastStep": self.last_step}

    def summary_metrics(self) -> dict:
        if self.summary is not None:
            return self.summary
        summary: dict = {}
        for row in self.rows:
            summary.update(row)
        return summary

    def exported_rows(self) -> list[dict]:
        if self.exported_until is None:
            return []
        return [r for r in self.rows if r["_step"] < self.exported_until]

    def live_rows(self) -> list[dict]:
        if self.exported_until is None:
            return list(self.rows)
        return [r for r in self.rows if r["_step"] >= self.exported_until]


@dataclass
class _Rule:
    operation: str | None
    run: str | None
    status: int | None
    retry_after: float | str | None
    delay: float
    drop: bool
    message: str
    remaining: float  # math.inf: every time
    body: bytes | None = None  # the answer as it is (e.g. an HTML page), with content_type
    content_type: str = "application/json"


def _wandb_config(config: Mapping) -> str:
    """A run config the way W&B stores it: {key: {"value": v, "desc": null}} as a JSON string."""
    return json.dumps({k: {"value": v, "desc": None} for k, v in config.items()})


def _run_numeric_id(run_id: str) -> str:
    return base64.b64encode(f"Run:v1:{run_id}".encode()).decode()


def _parquet_bytes(rows: list[dict]) -> bytes:
    """The exported history of a run as W&B writes it: one column per key, `_step` int64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = sorted({k for row in rows for k in row})
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if key == "_step":
            columns[key] = pa.array(values, type=pa.int64())
        elif all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            columns[key] = pa.array([None if v is None else float(v) for v in values], type=pa.float64())
        else:
            columns[key] = pa.array([None if v is None else json.dumps(v) for v in values], type=pa.string())
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


class WandbServer:
    """The endpoint. Start with `start()` or a `with` block; it stops itself after `lifetime` s.

    latency: seconds added to every answer (server side); bandwidth: bytes/s of the answers
    (None: unlimited). `requests` logs (method, operation, run, status) of every request;
    GET /_requests answers the counts per operation, the bytes sent (in all and per operation),
    then resets them; `per_run_requests()` counts the requests naming each run.
    """

    def __init__(self, runs: Iterable[ServedRun] = (), *, entity: str = "ent", project: str = "proj",
                 api_key: str | None = API_KEY, lifetime: float = 300.0, latency: float = 0.0,
                 bandwidth: float | None = None, projects: Iterable[str] | None = None,
                 sampled_serves_export: bool = False, max_samples: int | None = None,
                 sampled_share: float = 1.0):
        self.entity, self.project, self.api_key = entity, project, api_key
        self.projects = set(projects) if projects is not None else {project}
        self.runs: dict[str, ServedRun] = {}
        for run in runs:
            self.add_run(run)
        self.lifetime, self.latency, self.bandwidth = lifetime, latency, bandwidth
        self.sampled_serves_export = sampled_serves_export
        self.max_samples, self.sampled_share = max_samples, sampled_share
        self.requests: list[dict] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._parquet_cache: dict[tuple, bytes] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None
        self._connections: set[socket.socket] = set()
        self.in_flight = self.max_in_flight = 0  # GraphQL requests being answered (latency included)
        self.bytes_sent = 0
        self.bytes_by_operation: dict[str, int] = {}
        self.port: int | None = None

    # --- data -------------------------------------------------------------------------------
    def add_run(self, run: ServedRun) -> ServedRun:
        self.runs[run.run_id] = run
        return run

    def remove_run(self, run_id: str) -> None:
        self.runs.pop(run_id, None)

    # --- failures -----------------------------------------------------------------------------
    def fail(self, operation: str | None = None, *, run: str | None = None, status: int | None = 503,
             retry_after: float | str | None = None, delay: float = 0.0, drop: bool = False,
             times: float = math.inf, message: str | None = None, body: bytes | None = None,
             content_type: str = "application/json") -> None:
        """Answer matching requests with `status` (None: answer normally, after `delay`).

        operation: a GraphQL operation name ("Runs", "Run", "SampledHistoryPage", ...),
        "parquet" for the parquet files, or None for every request; run: a run id or None.
        drop=True closes the connection without an answer. body: the answer's bytes as they are
        (e.g. status=200 and a captive portal's HTML page, content_type="text/html") in place of
        a GraphQL error. Rules apply in the order given; `times` limits how often a rule applies.
        """
        text = message or {401: "user is not logged in", 403: "permission denied",
                           404: "project not found", 429: "rate limit exceeded"}.get(status or 0,
                                                                                       "service unavailable")
        with self._lock:
            self._rules.append(_Rule(operation, run, status, retry_after, delay, drop, text, times, body,
                                     content_type))

    def clear_failures(self) -> None:
        with self._lock:
            self._rules.clear()

    def _rule_for(self, operation: str, run: str | None) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining <= 0:
                    continue
                if rule.operation not in (None, operation) or rule.run not in (None, run):
                    continue
                rule.remaining -= 1
                return rule
        return None

    def count(self, operation: str | None = None, run: str | None = None) -> int:
        """How many requests of that operation (and run) arrived."""
        return len(self.logged(operation, run))

    def logged(self, operation: str | None = None, run: str | None = None) -> list[dict]:
        """The logged requests of that operation (and run): method, operation, run, status,
        time, variables (a SampledHistoryPage's spec decoded)."""
        with self._lock:
            found = [dict(r) for r in self.requests if operation in (None, r["operation"]) and run in (None, r["run"])]
        for entry in found:
            spec = entry["variables"].get("spec")
            if isinstance(spec, str):
                entry["variables"] = {**entry["variables"], "spec": json.loads(spec)}
            specs = entry["variables"].get("specs")
            if isinstance(specs, list):
                entry["variables"] = {**entry["variables"], "specs": [json.loads(s) if isinstance(s, str) else s
                                                                      for s in specs]}
        return found

    def specs(self, run: str | None = None) -> list[dict]:
        """Every sampledHistory spec asked for (of that run), decoded, in the order asked."""
        found = []
        for entry in self.logged(None, run):
            variables = entry["variables"]
            found += [variables["spec"]] if isinstance(variables.get("spec"), dict) else []
            found += list(variables.get("specs") or [])
        return found

    def per_run_requests(self) -> Counter:
        """run id -> requests that named it (GraphQL with a run and parquet files)."""
        with self._lock:
            return Counter(r["run"] for r in self.requests if r["run"] is not None)

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, **extra: str) -> dict:
        """Environment for a wandb client of this server (merge into os.environ or a subprocess env)."""
        env = {"WANDB_BASE_URL": self.url, "WANDB_API_KEY": self.api_key or API_KEY,
               "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false"}
        env.update(extra)
        return env

    def start(self) -> WandbServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _QuietServer(("127.0.0.1", self.port or 0), handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"wandb-server-{self.port}", daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection: the port then refuses connections."""
        httpd, self._httpd = self._httpd, None
        if self._timer is not None:
            self._timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:  # keep-alive connections would otherwise go on serving
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restart(self) -> WandbServer:
        """Serve again on the same port (after `stop`)."""
        return self.start()

    def __enter__(self) -> WandbServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- GraphQL ------------------------------------------------------------------------------
    def _run(self, name: str | None) -> ServedRun | None:
        return self.runs.get(name) if name else None

    def _project_ok(self, variables: Mapping) -> bool:
        return variables.get("entity") == self.entity and variables.get("project") in self.projects

    def _light_fields(self, run: ServedRun) -> dict:
        return {"projectId": "1", "id": _run_numeric_id(run.run_id), "tags": list(run.tags), "name": run.run_id,
                "displayName": run.name, "sweepName": None, "state": run.state, "group": run.group,
                "jobType": None, "commit": None, "readOnly": False, "createdAt": run.created_at,
                "heartbeatAt": run.heartbeat_at, "description": None, "notes": run.notes,
                "historyLineCount": run.n_rows, "user": {"name": "test", "username": "test"}}

    def _sampled(self, run: ServedRun, spec: Mapping) -> list[dict]:
        """One sampledHistory spec, as W&B answers it: the rows of steps minStep..maxStep (both
        inclusive) holding ALL the spec's keys, only those keys, sampled down to `samples` rows
        (evenly spaced, first and last kept) when there are more."""
        keys = list(spec.get("keys") or [])
        lo, hi = int(spec.get("minStep", 0)), int(spec.get("maxStep", 2**62))
        samples = max(1, int(spec.get("samples", 500)))
        if self.max_samples is not None:  # a server that caps what a spec may ask
            samples = min(samples, self.max_samples)
        source = run.rows if self.sampled_serves_export else run.live_rows()
        rows = [{k: r[k] for k in keys} for r in source if lo <= r["_step"] <= hi and all(k in r for k in keys)]
        if self.sampled_share < 1 and len(rows) > 2:  # a server that samples whatever it is asked
            samples = min(samples, max(2, math.ceil(self.sampled_share * len(rows))))
        if len(rows) > samples:
            picks = sorted({round(i * (len(rows) - 1) / max(1, samples - 1)) for i in range(samples)})
            rows = [rows[i] for i in picks]
        return rows

    def _run_fields(self, run: ServedRun, query: str, base_url: str, variables: Mapping) -> dict:
        """A run with the fields a query asks for (listing or single-run queries of any name)."""
        fields = self._light_fields(run)
        if re.search(r"\bconfig\b", query):
            fields["config"] = _wandb_config(run.config)
        if "summaryMetrics" in query:
            fields["summaryMetrics"] = json.dumps(run.summary_metrics())
        if "systemMetrics" in query:
            fields["systemMetrics"] = "{}"
        if "historyKeys" in query:
            fields["historyKeys"] = run.history_keys()
        if "parquetHistory" in query:
            fields["parquetHistory"] = self._parquet_history(run, base_url)
        if "sampledHistory" in query:
            specs = variables.get("specs") or ([variables["spec"]] if "spec" in variables else [])
            fields["sampledHistory"] = [self._sampled(run, json.loads(s) if isinstance(s, str) else s) for s in specs]
        return fields

    def _parquet_history(self, run: ServedRun, base_url: str) -> dict:
        exported = run.exported_rows()
        urls = []
        if exported:
            version = abs(hash((run.n_rows, run.last_step, run.heartbeat_at))) % 10**8
            urls = [f"{base_url}/files/{self.entity}/{self.project}/{run.run_id}/history-0.parquet?v={version}"]
        return {"parquetUrls": urls, "liveData": [{"_step": float(r["_step"])} for r in run.live_rows()]}

    def graphql(self, operation: str, variables: Mapping, base_url: str, query: str = "") -> dict:
        """The `data` of a GraphQL answer (raises LookupError for an unknown operation).

        wandb's own operations are answered by name; others (the project's CbsRuns listing,
        CbsRunHistory...) by the fields they ask for: a listing (`runs(`) or one run (`run(`)."""
        if operation in ("Viewer", "GetViewer", "GetDefaultEntity"):
            return {"viewer": {"id": "VXNlcjox", "entity": self.entity, "username": "test", "email": None,
                               "flags": None, "teams": {"edges": []}, "name": "test", "admin": False,
                               "deletedAt": None, "apiKeys": {"edges": []}}}
        if operation in ("ServerFeaturesQuery",):
            return {"serverInfo": {"features": []}}
        if operation == "Runs" or (operation not in _WANDB_OPERATIONS and "runs(" in query):
            if not self._project_ok(variables):
                return {"project": None}
            ordered = sorted(self.runs.values(), key=lambda r: (r.created_at, r.run_id))
            start = int(variables.get("cursor") or 0)
            per_page = int(variables.get("perPage") or 50)
            page = ordered[start:start + per_page]
            edges = [{"node": self._run_fields(r, query, base_url, variables) if operation != "Runs"
                      else self._light_fields(r), "cursor": str(start + i + 1)} for i, r in enumerate(page)]
            return {"project": {"internalId": "1", "runCount": len(ordered), "readOnly": False,
                                "runs": {"edges": edges, "pageInfo": {
                                    "endCursor": edges[-1]["cursor"] if edges else None,
                                    "hasNextPage": start + per_page < len(ordered)}}}}
        name = variables.get("name") or variables.get("runName") or variables.get("run")
        run = self._run(name) if self._project_ok(variables) else None
        if operation in _WANDB_OPERATIONS[3:] or "run(" in query:
            if not self._project_ok(variables):
                return {"project": None}
            if run is None:
                return {"project": {"run": None}}
        if operation not in _WANDB_OPERATIONS and "run(" in query:
            return {"project": {"run": self._run_fields(run, query, base_url, variables)}}
        if operation == "Run":
            return {"project": {"run": {
                **self._light_fields(run), "config": _wandb_config(run.config),
                "summaryMetrics": json.dumps(run.summary_metrics()), "systemMetrics": "{}",
                "historyKeys": run.history_keys()}}}
        if operation == "RunHistoryKeys":
            return {"project": {"run": {"historyKeys": run.history_keys()}}}
        if operation == "RunParquetHistory":
            return {"project": {"run": {"parquetHistory": self._parquet_history(run, base_url)}}}
        if operation == "SampledHistoryPage":
            return {"project": {"run": {"sampledHistory": [self._sampled(run, json.loads(variables["spec"]))]}}}
        if operation == "HistoryPage":
            lo, hi = int(variables["minStep"]), int(variables["maxStep"])
            rows = [r for r in run.live_rows() if lo <= r["_step"] < hi][: int(variables.get("pageSize") or 500)]
            return {"project": {"run": {"history": [json.dumps(r) for r in rows]}}}
        raise LookupError(f"unknown GraphQL operation {operation!r}")

    def parquet_file(self, run_id: str) -> bytes | None:
        run = self.runs.get(run_id)
        if run is None or not run.exported_rows():
            return None
        rows = run.exported_rows()
        key = (run_id, len(rows), run.last_step, run.heartbeat_at)
        with self._lock:
            data = self._parquet_cache.get(key)
        if data is None:
            data = _parquet_bytes(rows)
            with self._lock:
                self._parquet_cache[key] = data
        return data


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        return  # a client that hung up (or a connection closed by stop()) is not an error here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: WandbServer  # set on the subclass made by WandbServer.start

    def log_message(self, *args) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        with self.server_state._lock:
            self.server_state._connections.add(self.connection)

    def finish(self) -> None:
        with self.server_state._lock:
            self.server_state._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # --- plumbing -----------------------------------------------------------------------------
    def _log(self, operation: str, run: str | None, status: int) -> None:
        self.operation = operation  # for the bytes per operation of the answer that follows
        state = self.server_state
        with state._lock:
            state.requests.append({"method": self.command, "operation": operation, "run": run, "status": status,
                                   "time": time.monotonic(), "variables": getattr(self, "variables", {})})

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: Mapping[str, str] | None = None, head_only: bool = False) -> None:
        state = self.server_state
        delay = state.latency + (len(body) / state.bandwidth if state.bandwidth else 0.0)
        if delay > 0:
            time.sleep(delay)
        with state._lock:
            state.bytes_sent += 0 if head_only else len(body)
            operation = getattr(self, "operation", "?")
            state.bytes_by_operation[operation] = state.bytes_by_operation.get(operation, 0) + (
                0 if head_only else len(body))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _apply_rule(self, operation: str, run: str | None) -> bool:
        """Apply an injected failure; True when the request has been answered (or dropped)."""
        rule = self.server_state._rule_for(operation, run)
        if rule is None:
            return False
        if rule.delay:
            time.sleep(rule.delay)
        if rule.drop:
            self._log(operation, run, 0)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if rule.status is None:
            return False  # a slow but otherwise normal answer
        headers = {} if rule.retry_after is None else {"Retry-After": str(rule.retry_after)}
        body = rule.body if rule.body is not None else json.dumps({"errors": [{"message": rule.message}]}).encode()
        self._log(operation, run, rule.status)
        self._send(rule.status, body, rule.content_type, headers=headers)
        return True

    def _authorised(self) -> bool:
        key = self.server_state.api_key
        if key is None:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user_pass = base64.b64decode(header[6:]).decode()
            except ValueError:
                return False
            return user_pass.split(":", 1)[-1] == key
        return header == f"Bearer {key}"

    # --- methods ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlparse(self.path).path
        if path != "/graphql":
            self._log(path, None, 404)
            self._send(404, b'{"error": "not found"}')
            return
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._log("?", None, 400)
            self._send(400, b'{"errors": [{"message": "bad JSON"}]}')
            return
        query = payload.get("query") or ""
        match = _OPERATION.search(query)
        operation = match.group(1) if match else "?"
        variables = self.variables = payload.get("variables") or {}
        run = variables.get("name") or variables.get("runName") or variables.get("run")
        if self._apply_rule(operation, run):
            return
        if not self._authorised():
            self._log(operation, run, 401)
            self._send(401, b'{"errors": [{"message": "user is not logged in"}]}')
            return
        state = self.server_state
        host = self.headers.get("Host") or f"127.0.0.1:{state.port}"
        with state._lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            try:
                data = state.graphql(operation, variables, f"http://{host}", query)
            except LookupError as exc:
                self._log(operation, run, 400)
                self._send(400, json.dumps({"errors": [{"message": str(exc)}]}).encode())
                return
            self._log(operation, run, 200)
            self._send(200, json.dumps({"data": data}).encode())
        finally:
            with state._lock:
                state.in_flight -= 1

    def _parquet(self, head_only: bool) -> None:
        parts = urlparse(self.path).path.strip("/").split("/")
        run = parts[3] if len(parts) == 5 and parts[0] == "files" else None
        if self._apply_rule("parquet", run):
            return
        data = self.server_state.parquet_file(run) if run else None
        if data is None:
            self._log("parquet", run, 404)
            self._send(404, b"not found", "text/plain", head_only=head_only)
            return
        headers = {"Accept-Ranges": "bytes"}
        status, body = 200, data
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            size = len(data)
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start, end = max(0, size - int(match.group(2))), size - 1
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._log("parquet", run, status)
        self._send(status, body, "application/octet-stream", headers=headers, head_only=head_only)

    def do_GET(self) -> None:  # noqa: N802
        if urlparse(self.path).path == "/_requests":  # for a benchmark in another process
            state = self.server_state
            with state._lock:
                counts = Counter(r["operation"] for r in state.requests)
                body = json.dumps({"requests": dict(counts), "bytes": state.bytes_sent,
                                   "bytes_by_operation": dict(state.bytes_by_operation)}).encode()
                state.requests.clear()
                state.bytes_sent = 0
                state.bytes_by_operation = {}
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._parquet(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._parquet(head_only=True)


VAL = "val-core/openai/gsm8k/reward/mean@1"


def verl_rows(n_steps: int) -> list[dict]:
    """History rows as verl logs them: validation at step 0 (alone) and every 5 steps, the
    per-step training keys, grad-noise keys every 2 steps, and keys the analysis does not need."""
    rows = [{"_step": 0, VAL: 0.1}]
    for s in range(1, n_steps + 1):
        row = {"_step": s, "training/global_step": s, "critic/score/mean": 0.2 + 0.01 * s,
               "actor/entropy": 1.0, "actor/pg_loss": -0.1, "response_length/mean": 300.0,
               "perf/throughput": 1000.0 + s, "timing_s/step": 20.0}
        if s % 5 == 0:
            # rises to 0.9 by step 20 and stays there: an accuracy, never above 1 (values above 1
            # in a fraction series are flagged and dropped, issue 18)
            row[VAL] = min(0.1 + 0.04 * s, 0.9)
        if s % 2 == 0:
            row["grad_noise/B_noise_estimate"] = 100.0 + s
        rows.append(row)
    return rows


def verl_run(run_id: str, name: str | None = None, n_prompts: int = 32, n_rollouts: int = 8, n_steps: int = 10,
             **kw: Any) -> ServedRun:
    """A verl GRPO run named cbs_p1_np<N>_nr<M> with a verl config and verl_rows(n_steps)."""
    config = {"data": {"train_batch_size": n_prompts}, "actor_rollout_ref": {"rollout": {"n": n_rollouts}},
              "trainer": {"n_gpus_per_node": 8, "nnodes": 1}, "_wandb": {"cli_version": "0.31.0"}}
    return ServedRun(run_id=run_id, name=name or f"cbs_p1_np{n_prompts}_nr{n_rollouts}", config=config,
                     rows=kw.pop("rows", None) or verl_rows(n_steps), **kw)


def demo_runs(root, **overrides: Any) -> list[ServedRun]:
    """The runs of a directory of W&B offline runs (e.g. data/demo) as the server would hold
    them after `wandb sync`: same ids, names, configs, states and history rows."""
    from datetime import datetime, timezone
    from pathlib import Path

    from cbs_rlvr.sources.wandb_file import find_wandb_files, read_wandb_file

    runs = []
    for path in find_wandb_files(Path(root)):
        run = read_wandb_file(path)
        start = run.get("start_time")
        created = (datetime.fromtimestamp(float(start), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                   if start is not None else "2026-01-01T00:00:00Z")
        rows = [dict(r) for r in run["history"]]
        last = max((r.get("_timestamp", 0) for r in rows), default=0) or (float(start or 0) + 1)
        heartbeat = datetime.fromtimestamp(float(last), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        runs.append(ServedRun(run_id=run["run_id"], name=run["name"], config=run["config"], rows=rows,
                              state=run["state"], created_at=created, heartbeat_at=heartbeat,
                              **overrides))
    return runs

