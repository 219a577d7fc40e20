"""Headless Chromium over the finished reports: are they readable offline, and what do they look
like? Used by `python -m cbs_rlvr screenshots` (docs/) and by the test suite.

Chromium runs with no network (every connection goes to a dead proxy) and logs both its
console and its network activity; a report that stands alone makes no request and logs no
error. Chromium's own background traffic (updates, time, accounts) is not the page's and is
ignored.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

_BROWSER_OWN = ("google.com/", "googleapis.com/", "gvt1.com/", "gstatic.com/")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps", "--hide-scrollbars", "--proxy-server=127.0.0.1:9"]


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(browser: str, extra: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cbs-chromium-") as profile:
        return subprocess.run([browser, *_FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=timeout)


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2400,
               browser: str | None = None, timeout: float = 120) -> Path:
    """A PNG of `page` as headless Chromium renders it, offline."""
    browser = browser or find_chromium()
    if browser is None:
        raise RuntimeError("Chromium not found: install it (apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(browser, [f"--screenshot={png.resolve()}", f"--window-size={width},{height}"],
         page.resolve().as_uri(), timeout)
    if not png.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot of {page}")
    return png


def offline_problems(pages: list[Path], browser: str | None = None,
                     timeout: float = 180) -> list[str]:
    """Open every page (in one browser, as iframes of a harness page) with the network off and
    return what went wrong: each request the pages made (there should be none: everything is
    embedded) and each console message of level error or warning."""
    browser = browser or find_chromium()
    if browser is None:
        raise RuntimeError("Chromium not found: install it (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="cbs-offline-") as tmp:
        harness = Path(tmp) / "harness.html"
        frames = "".join(f"<iframe src='{html.escape(p.resolve().as_uri())}' width='800' "
                         "height='600'></iframe>" for p in pages)
        harness.write_text(f"<!DOCTYPE html><html><body>{frames}</body></html>")
        netlog = Path(tmp) / "net.json"
        proc = _run(browser, ["--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
                              "--virtual-time-budget=5000", "--dump-dom"], harness.as_uri(), timeout)
        problems = []
        try:
            events = json.loads(netlog.read_text()).get("events", [])
        except (OSError, ValueError):
            events = []
            problems.append("Chromium wrote no network log")
        urls = {e.get("params", {}).get("url") for e in events}
        for url in sorted(u for u in urls if u):
            if url.startswith(("file:", "data:", "about:", "chrome:")):
                continue
            if any(own in url for own in _BROWSER_OWN):
                continue  # Chromium's own background traffic, not the page's
            problems.append(f"request: {url}")
        for line in proc.stderr.splitlines():
            if ":CONSOLE" in line and "harness.html" not in line:
                problems.append(f"console: {line.split(']', 1)[-1].strip()}")
        if "<iframe" not in proc.stdout:
            problems.append("Chromium did not load the pages")
    return problems


#: Column names a reader should never see (tables show plain headers; see fmt.HEADERS).
#: n_prompts and n_rollouts are not among them: they are the sweep's own notation in the prose,
#: as B_noise and S_min are.
RAW_COLUMN_NAMES = ("r2_log", "noise_sd_log", "B_simple_over_B_noise", "B_crit_20pct", "predicted_hours",
                    "predicted_steps", "predicted_gpu_hours", "total_batch",
                    "expected_reduction_h", "time_to_target_h", "n_censored", "n_points", "sigma_log",
                    "S_min_lo", "S_min_hi", "B_noise_lo", "B_noise_hi", "B_noise_mccandlish",
                    "time_to_target_with_overhead_h", "overhead_in_step_time", "n_eval", "n_segments")
#: Table headers whose cells are counts: a reader sees integers ('12', '1,024', '≥70'), never '1.00'.
COUNT_HEADERS = ("runs", "replicate", "replicates", "segments", "evaluations", "prompts", "rollouts", "batch B",
                 "configurations", "last step", "GPUs", "rank", "to step", "updates")
#: verl config keys: prose says where a number comes from in plain words ('the GPUs per node times
#: the nodes of the run's config'); a key may follow only in a details section a reader opens, or in
#: a table (an excluded run's reason names the key to log).
CONFIG_KEYS = ("data.train_batch_size", "actor_rollout_ref", "rollout.n", "train_batch_size", "ppo_mini_batch_size",
               "ppo_epochs", "n_gpus_per_node", "trainer.nnodes", "total_training_steps", "test_freq")
#: A time in hours under a tenth of an hour ('0.0016 h'): said in minutes or seconds instead.
_SHORT_HOURS = r"(?<![\d.,])0\.0\d*\s?(h|hours?)(?![\w-])"
_INTEGER = r"[≥≤]?\d{1,3}(,\d{3})*|–"
_E_NOTATION = r"(?<![\w.])\d+(\.\d+)?[eE][+-]?\d+(?![\w.])"
_PROBE = """<script>(function(){var t=document.body?document.body.innerText:"";var p=document.createElement("pre");
var imgs=[].map.call(document.querySelectorAll("img"),function(i){return i.getAttribute("alt")||"";});
var rels=[].map.call(document.querySelectorAll("a[rel]"),function(a){return a.getAttribute("rel");});
var hrefs=[].map.call(document.querySelectorAll("a[href]"),function(a){return a.getAttribute("href");});
var tables=[].map.call(document.querySelectorAll("table"),function(tb){var h=[].map.call(tb.querySelectorAll("thead th"),
function(c){return c.innerText.trim();});var r=[].map.call(tb.querySelectorAll("tbody tr"),function(tr){
return [].map.call(tr.children,function(c){return c.innerText.trim();});});return {head:h,rows:r};});
var hidden=[].map.call(document.querySelectorAll("table"),function(tb){var d=tb.style.display;tb.style.display="none";return d;});
var prose=document.body?document.body.innerText:"";[].forEach.call(document.querySelectorAll("table"),function(tb,i){tb.style.display=hidden[i];});
p.textContent=JSON.stringify({id:CBS_ID,got:{title:document.title,scroll:document.documentElement.scrollWidth,
inner:window.innerWidth,text:t,prose:prose,imgs:imgs,rels:rels,hrefs:hrefs,tables:tables}});parent.postMessage(p.textContent,"*");})();</script>"""
#: The page that holds the probed pages, each in a frame as wide as the window it stands for: each
#: probe posts what it saw, and the harness writes it into its own DOM, which Chromium dumps.
_HARNESS = ("<!DOCTYPE html><html><body style='margin:0'><script>window.addEventListener('message',function(e){"
            "var p=document.createElement('pre');p.className='cbs-probe';p.textContent=e.data;"
            "document.body.appendChild(p);});</script>{frames}</body></html>")
#: Frames per Chromium: a report embeds its figures, so a few dozen at once is memory enough.
_FRAMES_PER_BROWSER = 16


def _probe(items: list[tuple[Path, int]], browser: str, timeout: float) -> list[dict]:
    """Load a copy of each page with a probe script appended, in a frame `width` px wide (a true
    phone width: a headless window is never narrower than 500 px), several frames per Chromium
    (one Chromium a page cost a second or two each); each probe reports the page's title, its
    scrollWidth and innerWidth, its visible text and prose, its images' alt texts, links and
    tables. One dict per (page, width), empty where the page gave no layout."""
    import re

    got: dict[int, dict] = {}
    for first in range(0, len(items), _FRAMES_PER_BROWSER):
        with tempfile.TemporaryDirectory(prefix="cbs-probe-") as tmp:
            frames = []
            for i, (page, width) in enumerate(items[first:first + _FRAMES_PER_BROWSER], start=first):
                # the probe is a script: the copy drops the page's policy that no script runs
                text = re.sub(r"<meta[^>]*Content-Security-Policy[^>]*>", "", page.read_text(encoding="utf-8"))
                probe = _PROBE.replace("CBS_ID", str(i))
                cut = text.rfind("</body>")
                copy = Path(tmp) / f"{i}-{page.name}"
                copy.write_text(text[:cut] + probe + text[cut:] if cut >= 0 else text + probe, encoding="utf-8")
                frames.append(f"<iframe src='{html.escape(copy.as_uri())}' width='{int(width)}' height='900' "
                              "style='border:0;display:block'></iframe>")
            harness = Path(tmp) / "harness.html"
            harness.write_text(_HARNESS.replace("{frames}", "".join(frames)), encoding="utf-8")
            proc = _run(browser, ["--window-size=1400,900", "--virtual-time-budget=5000", "--dump-dom"],
                        harness.as_uri(), timeout)
        for body in re.findall(r'<pre class="cbs-probe">(.*?)</pre>', proc.stdout, re.S):
            report = json.loads(html.unescape(body))
            got[int(report["id"])] = report["got"]
    return [got.get(i, {}) for i in range(len(items))]


def _count_cells(tables: list[dict]) -> list[str]:
    """Cells under a count header that are not integers (a table's header row is its last header
    row: pandas writes the index name in a second one)."""
    import re

    bad = []
    for t in tables:
        head, rows = t.get("head", []), t.get("rows", [])
        for row in rows:
            offset = len(head) - len(row)  # an index header pandas puts in a row of its own
            for j, name in enumerate(head):
                k = j - offset if offset > 0 else j
                if name in COUNT_HEADERS and 0 <= k < len(row) and not re.fullmatch(_INTEGER, row[k]):
                    bad.append(f"{name} = {row[k]!r}")
    return bad


def _text_problems(page: Path, got: dict, nav: bool) -> list[str]:
    """What the visible text, the images, the links and the tables of one laid-out page get wrong."""
    import re

    problems = []
    if re.search(r"\bNaN\b", got["text"]):
        problems.append(f"{page}: 'NaN' in the visible text")
    raw = [c for c in RAW_COLUMN_NAMES if re.search(rf"(?<![\w/]){re.escape(c)}(?!\w)", got["text"])]
    if raw:
        problems.append(f"{page}: raw column name(s) in the visible text: {', '.join(raw)}")
    e_numbers = sorted({m.group(0) for m in re.finditer(_E_NOTATION, got["text"])})
    if e_numbers:
        problems.append(f"{page}: e-notation in the visible text: {', '.join(e_numbers[:5])}")
    keys = [k for k in CONFIG_KEYS if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", got.get("prose", ""))]
    if keys:
        problems.append(f"{page}: config key(s) in the prose: {', '.join(keys)}")
    short = sorted({m.group(0) for m in re.finditer(_SHORT_HOURS, got["text"])})
    if short:
        problems.append(f"{page}: a short time in hours (say it in minutes or seconds): {', '.join(short[:5])}")
    if not re.fullmatch(r".+ · .+ · cbs-rlvr", got["title"]):
        problems.append(f"{page}: title {got['title']!r} does not name the phase and the section")
    no_alt = [a for a in got.get("imgs", []) if len(a.split()) < 3]
    if no_alt:
        problems.append(f"{page}: {len(no_alt)} image(s) without alt text saying what they show")
    if nav and not {"prev", "next"} & set(got.get("rels", [])):
        problems.append(f"{page}: no previous/next link")
    broken = [h for h in got.get("hrefs", []) if not re.match(r"[a-z]+:|#", h) and not (page.parent / h).exists()]
    if broken:
        problems.append(f"{page}: links to files that are not there: {', '.join(broken[:5])}")
    counts = _count_cells(got.get("tables", []))
    if counts:
        problems.append(f"{page}: counts not shown as integers: {', '.join(counts[:5])}")
    return problems


def reader_problems(pages: list[Path], widths=(390, 1280), browser: str | None = None,
                    timeout: float = 120) -> list[str]:
    """What a reader would trip over, per page, as headless Chromium lays it out: 'NaN', a raw
    column name or e-notation in the visible text, a verl config key in the prose (tables and closed
    details sections aside), a time under 0.1 h said in hours, an image without alt text, a count shown as
    '1.00', a link to a file that is not there, a section page without a previous/next link, a page wider than the window
    (scrollWidth > innerWidth) at each width, a title that does not name the phase and the
    section ('p1 · ... · cbs-rlvr')."""
    browser = browser or find_chromium()
    if browser is None:
        raise RuntimeError("Chromium not found: install it (apt-get install chromium)")
    problems = []
    items = [(page, width) for page in pages for width in widths]
    seen = iter(_probe(items, browser, timeout))
    for page in pages:
        for k, width in enumerate(widths):
            got = next(seen)
            if not got:
                problems.append(f"{page}: Chromium gave no layout at {width} px")
                continue
            if got["scroll"] > got["inner"]:
                problems.append(f"{page}: {got['scroll']} px wide in a {got['inner']} px window")
            if not k:
                nav = page.name != "index.html" and page.parent.name != "summary"
                problems += _text_problems(page, got, nav)
    return problems


def screenshot_record(out: Path, section: str) -> dict:
    """What the README's screenshots of OUT show, to hold a later build against (written beside
    them as screenshots.json by `python -m cbs_rlvr screenshots`): the snapshot's content hash and
    source, each phase's line to paste in a chat (decisions.csv's `summary`, as the index shows it)
    and B_noise at each target of the report's phase as its table prints it (its cbs_fit.csv)."""
    import csv

    from ..words.numbers import number

    out = Path(out)
    manifest = json.loads((out / "data" / "manifest.json").read_text(encoding="utf-8"))
    record = {"section": section, "source": manifest.get("source"), "data": manifest.get("content_hash"),
              "answers": {}, "b_noise": {}}
    if (out / "decisions.csv").is_file():
        with open(out / "decisions.csv", newline="", encoding="utf-8") as handle:
            record["answers"] = {r["phase"]: r.get("summary", "") for r in csv.DictReader(handle)}
    fit = out / section.split("/", 1)[0] / "tables" / "cbs_fit.csv"
    if fit.is_file():
        with open(fit, newline="", encoding="utf-8") as handle:
            record["b_noise"] = {f"{float(r['threshold']):g}": number(r["B_noise"]) for r in csv.DictReader(handle)}
    return record


def screenshot_differences(shown: dict, fresh: dict) -> list[str]:
    """What a fresh build (`fresh`, a screenshot_record) shows otherwise than the screenshots
    (`shown`, their record): another data set, another answer or B_noise of a phase. Intervals aside:
    they move with the number of bootstrap resamples (the suite's builds draw fewer)."""
    import re

    def points(line: str) -> str:
        return re.sub(r" \[[^\]]*[\])]", "", str(line))

    diffs = [f"{k}: {shown.get(k)} shown, {fresh.get(k)} built" for k in ("data", "section")
             if shown.get(k) != fresh.get(k)]
    for phase in sorted(set(shown.get("answers", {})) | set(fresh.get("answers", {}))):
        a, b = (points(d.get("answers", {}).get(phase, "(none)")) for d in (shown, fresh))
        if a != b:
            diffs.append(f"{phase}: {a!r} shown, {b!r} built")
    if shown.get("b_noise") != fresh.get("b_noise"):
        diffs.append(f"B_noise by target: {shown.get('b_noise')} shown, {fresh.get('b_noise')} built")
    return diffs
