"""What collaborators open: each executed notebook as HTML, and OUT/index.html linking them all.

Both stand alone offline: the notebooks go through nbconvert's lab template with its CDN
scripts removed (cbs_rlvr/report/templates/cbs_offline) and code hidden, figures embedded; the index
is plain HTML with inline CSS and the headline figure embedded.

Run names, tags, config values and the rest come from whoever logged the runs, so a report is
built as if they held HTML: one boundary, `safe_outputs`, turns every output a notebook displays
into HTML in which text from data is text (Markdown rendered with its raw HTML escaped, then
every HTML output through an allowlist: no script, no event handler, no javascript: link, no
remote image), whichever function wrote the sentence; the index escapes every value it shows;
and every page forbids scripts altogether (CONTENT_SECURITY_POLICY), as a second wall.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import os
from functools import lru_cache
from pathlib import Path

from ..params import SECTIONS, SUMMARY_SECTION

TEMPLATES = Path(__file__).resolve().parent / "templates"

#: Every page's policy: no script of any kind runs, nothing is fetched (the pages are whole),
#: images only embedded, styles only inline.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                           "font-src data:; base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'

#: The HTML an output may keep: text formatting, lists, tables (pandas' own, with its <style>),
#: links to the web or within the page. Anything else is shown as the text it is.
_ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "div",
    "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s",
    "small", "span", "strong", "style", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "u", "ul"})
_ALLOWED_ATTRIBUTES = {"*": ["class", "id", "title", "style"], "a": ["href"], "table": ["border"],
                       "th": ["colspan", "rowspan"], "td": ["colspan", "rowspan"], "ol": ["start"],
                       "style": ["type", "scoped"]}
_ALLOWED_CSS = ("text-align", "vertical-align", "white-space", "font-weight", "font-style", "color",
                "background-color", "width", "min-width", "max-width", "padding", "margin")
#: The output types a report shows; others (JavaScript, widgets, LaTeX for MathJax) are dropped.
_SHOWN_MIMETYPES = ("text/html", "text/markdown", "text/plain", "image/png", "image/jpeg")


def sanitise_html(html_text: str) -> str:
    """HTML of an output -> the same with only _ALLOWED_TAGS and _ALLOWED_ATTRIBUTES kept: every
    other tag is escaped (shown as the text it is), script-bearing attributes and javascript:,
    data: or other non-web links removed, style attributes reduced to plain layout."""
    import bleach
    from bleach.css_sanitizer import CSSSanitizer

    return bleach.clean(html_text, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
                        protocols={"http", "https", "mailto"}, strip=False, strip_comments=True,
                        css_sanitizer=CSSSanitizer(allowed_css_properties=_ALLOWED_CSS))


def markdown_to_safe_html(markdown: str) -> str:
    """Markdown as nbconvert renders it, except that HTML inside it (a run name `<img ...>`) is
    escaped into text instead of passed through, then `sanitise_html` (links)."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    return sanitise_html(MarkdownWithMath(renderer=IPythonRenderer(escape=True)).render(markdown))


def safe_outputs(nb) -> None:
    """The one escaping boundary of the section reports, in place: every code cell output keeps
    only _SHOWN_MIMETYPES; Markdown becomes `markdown_to_safe_html`, HTML `sanitise_html`.
    Text and error outputs are escaped by the template; the notebook's own Markdown cells are
    the project's text, not data."""
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data")
            if not isinstance(data, dict):
                continue
            kept = {k: v for k, v in data.items() if k in _SHOWN_MIMETYPES}
            if "text/markdown" in kept:
                markdown = kept.pop("text/markdown")
                kept.setdefault("text/html", markdown_to_safe_html(
                    "".join(markdown) if isinstance(markdown, list) else str(markdown)))
            elif "text/html" in kept:
                html_text = kept["text/html"]
                kept["text/html"] = sanitise_html("".join(html_text) if isinstance(html_text, list)
                                                  else str(html_text))
            output["data"] = type(data)(kept)


#: What a fit's status means, shown under every table that has one.
STATUS_LEGEND = {
    "ok": "fitted, B_noise inside the sampled batch sizes",
    "extrapolated": "fitted, but B_noise rests on the form beyond the runs (outside the batch sizes that "
                    "reached the target, or S_min not approached): treat with care",
    "insufficient": "fewer than 3 batch sizes reach the target: no fit",
    "failed": "the data do not identify B_noise (S flat in B, or falling like 1/B throughout)",
}


@lru_cache(maxsize=1)
def _exporter():
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="cbs_offline", extra_template_basedirs=[str(TEMPLATES)],
                        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                        embed_images=True)


#: The section's short name in a browser tab's title.
SHORT_TITLES = {"01_load_runs": "runs", "02_steps_to_target": "steps to target", "03_training_curves":
                "training curves", "04_two_axis": "prompts vs rollouts", "05_gradient_noise": "gradient noise",
                "06_wall_clock": "wall-clock time", "08_plan": "decision and next runs", "07_summary": "summary"}


def page_title(phase: str, section: str) -> str:
    """'p1 · steps to target · cbs-rlvr': the phase and section, so tabs tell reports apart."""
    phase = "all phases" if phase == "summary" else phase
    return f"{phase} · {SHORT_TITLES.get(section, section.replace('_', ' '))} · cbs-rlvr"


def page_nav(phase: str, section: str, sections: list[str] | None = None) -> str:
    """The navigation of a section page, as HTML: back to the index, the previous and next
    section of the phase, and every section of the phase (this one unlinked)."""
    e = html.escape
    links = ["<a href='../index.html'>&larr; all reports</a>"]
    sections = [s for s in (sections or []) if s in SECTIONS or s == SUMMARY_SECTION]
    if section in sections:
        i = sections.index(section)
        if i > 0:
            links.append(f"<a rel='prev' href='{e(sections[i - 1])}.html'>&lsaquo; previous: "
                         f"{e(SHORT_TITLES.get(sections[i - 1], sections[i - 1]))}</a>")
        if i + 1 < len(sections):
            links.append(f"<a rel='next' href='{e(sections[i + 1])}.html'>next: "
                         f"{e(SHORT_TITLES.get(sections[i + 1], sections[i + 1]))} &rsaquo;</a>")
    items = [f"<strong>{e(SHORT_TITLES.get(s, s))}</strong>" if s == section else
             f"<a href='{e(s)}.html'>{e(SHORT_TITLES.get(s, s))}</a>" for s in sections]
    phase_line = (f"<div class='cbs-sections'>{e(phase)}: {' · '.join(items)}</div>" if len(items) > 1 else "")
    return "<div class='cbs-pn'>" + " ".join(f"<span>{x}</span>" for x in links) + "</div>" + phase_line


#: The files a reader downloads from a page: the tables and the paper's figures.
DOWNLOAD_SUFFIXES = (".csv", ".tex", ".pdf")


def downloads_html(files: list[str] | None) -> str:
    """'Files this page wrote': links (relative to the page) to each CSV, TeX and PDF, tables
    first, then figures (PDF, with each figure's plotted data as CSV)."""
    e = html.escape
    files = sorted({f for f in (files or []) if f.endswith(DOWNLOAD_SUFFIXES)},
                   key=lambda f: (not f.startswith("tables/"), f))
    if not files:
        return ""
    links = " · ".join(f"<a href='{e(f)}'>{e(f)}</a>" for f in files)
    return f"<details class='cbs-files'><summary>Files this page wrote ({len(files)})</summary><p>{links}</p></details>"


def convert_notebook(executed: Path, target: Path, sections: list[str] | None = None,
                     files: list[str] | None = None) -> Path:
    """One executed notebook -> its HTML report (code hidden, figures embedded, no scripts, every
    output through `safe_outputs`), titled by its phase (the folder it is written to) and section,
    with its navigation (`page_nav` over the phase's `sections`) and the files it wrote (`files`,
    relative to the page's folder)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    safe_outputs(nb)
    phase, section = Path(target).parent.name, Path(executed).stem.removesuffix(".failed")
    title = page_title(phase, section)
    resources = {"metadata": {"name": title}, "csp": CONTENT_SECURITY_POLICY,
                 "cbs_nav": page_nav(phase, section, sections), "cbs_files": downloads_html(files)}
    body, _ = _exporter().from_notebook_node(nb, resources=resources)
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _embed_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _section_entry(out: Path, phase: str, section: str) -> tuple[str, str | None, str | None]:
    """(title, href or None, error or None) of one section of one phase."""
    title = SECTIONS.get(section, "Cross-phase summary")
    error_path = out / phase / f"{section}.error.txt"
    if error_path.is_file():
        return title, None, error_path.read_text().strip().removeprefix("FAILED: ")
    if (out / phase / f"{section}.html").is_file():
        return title, f"{phase}/{section}.html", None
    return title, None, None


def _entry_item(out: Path, phase: str, section: str, missing: str) -> str:
    """The index's list item of one report: its link, its failure, or why it is missing."""
    e = html.escape
    title, href, error = _section_entry(out, phase, section)
    if error:
        return f"<li class='fail'>{e(title)}: failed &mdash; {e(error)}</li>"
    if href:
        return f"<li><a href='{e(href)}'>{e(title)}</a></li>"
    return f"<li class='muted'>{e(title)}: {missing}</li>"


def _table_html(path: Path) -> str:
    """A CSV table as an HTML table (escaped; a dash for a missing value), in a box that
    scrolls sideways when the table is wider than the screen."""
    from ..words.numbers import DASH

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(c) if c and c.lower() not in ('nan', '<na>') else DASH}</td>"
                                    for c in row) + "</tr>" for row in rows[1:])
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _running_lines(out: Path, phase: str) -> list[str]:
    """While runs run: the sentence of OUT/<phase>/tables/sweep_progress.csv (08 writes it then)."""
    import csv

    from ..words.early import running_sentence

    path = out / phase / "tables" / "sweep_progress.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8"))) if path.is_file() else []
    return [x for x in (running_sentence(r) for r in rows) if x]


def plan_failed(out: Path, phase: str) -> bool:
    """The phase's plan notebook failed in the last build (its decision.csv, if any, is older)."""
    return (out / phase / "08_plan.error.txt").is_file()


def _no_answer(out: Path, phase: str, p: dict) -> str:
    """Why a phase with runs has no row in decisions.csv, in one sentence."""
    if "08_plan" not in p.get("sections", ()):
        kept = ", ".join(SHORT_TITLES.get(x, x) for x in SECTIONS if x in p.get("sections", ()))
        return (f"no batch to recommend: this phase has no plan section (its question is answered by its "
                f"sections: {kept})")
    if plan_failed(out, phase):
        kept = (f"; the answer of an earlier build stays in {phase}/tables/decision.csv, from the data "
                "of then" if (out / phase / "tables" / "decision.csv").is_file() else "")
        return f"no batch to recommend: its plan notebook failed in this build (see its report below){kept}"
    return "no batch to recommend yet: its plan is not built in this output directory"


def _decisions_html(out: Path, params: dict | None = None, with_runs: dict | None = None) -> list[str]:
    """The index's opening: per phase, the decision's sentences (decisions.decision_sentences
    over OUT/decisions.csv, the same sentences that open 08_plan), the line to paste in a chat
    (decisions.csv's `summary`); and for each phase with runs but no decision, why."""
    from ..contracts import read_decisions
    from ..words.decision import decision_sentences
    from ..words.numbers import sentence

    rows = read_decisions(out)
    e = html.escape
    decided = {row["phase"] for row in rows}
    missing = [(ph, p) for ph, p in (params or {}).items()
               if isinstance(p, dict) and (with_runs or {}).get(ph) and ph not in decided]
    if not rows and not missing:
        return []
    parts = ["<h2>The answer</h2>"]
    for row in rows:
        lines = decision_sentences(row)
        link = (f" <a href='{e(row['phase'])}/08_plan.html'>details</a>"
                if (out / row["phase"] / "08_plan.html").is_file() else "")
        chat = (f"<p class='chat'>To paste in a chat: <code>{e(row['summary'])}</code></p>"
                if row.get("summary") else "")
        parts.append(f"<div class='decision'><p><strong>{e(lines[0])}</strong></p>"
                     + "".join(f"<p>{e(x)}</p>" for x in lines[1:-1])
                     + (f"<p>{e(lines[-1])}{link}</p>" if len(lines) > 1 else "") + chat
                     + "".join(f"<p><em>{e(x)}</em></p>" for x in _running_lines(out, row["phase"])) + "</div>")
    for phase, p in missing:
        parts.append(f"<div class='decision nodecision'><p><strong>{e(phase)} · {e(p.get('title', ''))}.</strong> "
                     f"{e(sentence(_no_answer(out, phase, p)))}</p></div>")
    where = (" Every number here is in <a href='decisions.csv'>decisions.csv</a>."
             if rows and (out / "decisions.csv").is_file() else "")
    parts.append("<p class='muted'>B_noise: the batch at which one step is worth half of what an infinitely "
                 f"large batch's step would be (S = 2 S_min).{where}</p>")
    return parts


def _findings_html(out: Path) -> list[str]:
    """The index's cross-phase lines (07's findings.csv: what a rollout is worth against a prompt
    first, then how B_noise moves with the target per phase), linked to 07."""
    path = out / "summary" / "tables" / "findings.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return []
    e = html.escape
    rows.sort(key=lambda r: r.get("topic") != "prompts against rollouts")
    link = (" <a href='summary/07_summary.html'>details</a>"
            if (out / "summary" / "07_summary.html").is_file() else "")
    return (["<h2>Across phases</h2><ul>"]
            + [f"<li>{e(r.get('phase', ''))} · {e(r.get('topic', ''))}: {e(r.get('finding', ''))}</li>" for r in rows]
            + [f"</ul><p class='muted'>Every line here is in <a href='summary/tables/findings.csv'>findings.csv</a>."
               f"{link}</p>"])


def _changes_html(changes: list[str], since: str) -> list[str]:
    """What changed in the answer since the last build (words.changes.answer_changes), one item a phase."""
    if not changes:
        return []
    e = html.escape
    when = f" of {e(since)}" if since else ""
    return [f"<div class='changes'><p><strong>Changed since the build{when}:</strong></p><ul>"
            + "".join(f"<li>{e(x)}</li>" for x in changes) + "</ul></div>"]


def render_index(out: Path, params: dict[str, dict | str], with_runs: dict[str, int],
                 manifest: dict, created: str, changes: list[str] = (), since: str = "") -> str:
    """The index page: the decision per phase first (OUT/decisions.csv), what changed in it since the
    last build (`changes`, the build of `since`), then the B_noise table, then the reports.
    params: {phase: validated params, or why the file is invalid}."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", CSP_META,
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>all phases · decisions and reports · cbs-rlvr</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}"
        "table{border-collapse:collapse;font-size:14px}.scroll{max-width:100%;overflow-x:auto}"
        "th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}"
        "th:first-child,td:first-child,th:nth-child(2),td:nth-child(2),th:nth-child(3),"
        "td:nth-child(3){text-align:left}.fail{color:#b00}.muted{color:#666}"
        "img{max-width:100%;height:auto}h2{margin-top:1.6em}ul{padding-left:1.2em}li{margin:2px 0}"
        "dl{font-size:13px;color:#444}dt{font-weight:600;float:left;margin-right:.5em}"
        ".decision{border-left:4px solid #0b5cad;padding:.2em .8em;margin:1em 0;background:#f5f8fc}"
        ".decision p{margin:.4em 0}a{color:#0b5cad}.nodecision{border-left-color:#999;background:#f6f6f6}"
        ".chat{font-size:13px;color:#444}.chat code{white-space:normal;overflow-wrap:anywhere}"
        ".changes{border-left:4px solid #c77c02;padding:.2em .8em;margin:1em 0;background:#fdf8ef}"
        ".changes p,.changes ul{margin:.3em 0}"
        "@media (max-width:600px){body{margin:1em auto;padding:0 .6em}table{font-size:12px}"
        "th,td{padding:3px 6px}}</style>",
        "</head><body>", "<h1>Critical batch size in RLVR</h1>",
        f"<p class='muted'>Source: {e(str(manifest.get('source', '')))} &middot; "
        f"{int(manifest.get('n_runs', 0))} runs analysed, {int(manifest.get('n_excluded', 0))} "
        "left out with their reasons in <a href='data/excluded_runs.csv'>excluded_runs.csv</a> "
        f"&middot; built {e(created)}</p>"]
    decisions = _decisions_html(out, params, with_runs)
    parts += decisions[:1] + _changes_html(list(changes), since) + decisions[1:]
    parts += _findings_html(out)
    summary_csv = out / "summary" / "tables" / "cbs_summary.csv"
    if summary_csv.is_file():
        parts += ["<h2>B_noise across phases</h2>", _table_html(summary_csv), "<dl>"]
        parts += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in STATUS_LEGEND.items()]
        parts.append("</dl>")
        headline = out / "summary" / "figures" / "headline.png"
        if headline.is_file():
            parts.append(f"<p><img alt='B_noise against the target accuracy, by phase' "
                         f"src='{_embed_png(headline)}'></p>")
    parts.append("<h2>Reports by phase</h2>")
    for phase, p in params.items():
        if isinstance(p, str):
            parts.append(f"<h3>{e(phase)}</h3><p class='fail'>params file invalid: {e(p)}</p>")
            continue
        parts.append(f"<h3>{e(phase)}: {e(p['title'])}</h3>")
        if not with_runs.get(phase):
            parts.append("<p class='muted'>no runs yet</p>")
            continue
        parts.append(f"<p class='muted'>{int(with_runs[phase])} runs</p><ul>")
        parts += [_entry_item(out, phase, section, "not built in this output directory yet")
                  for section in SECTIONS if section in p["sections"]]
        parts.append("</ul>")
    parts += ["<h3>All phases</h3><ul>",
              _entry_item(out, "summary", SUMMARY_SECTION, "no phase has a fit yet"),
              "</ul>", "</body></html>"]
    return "\n".join(parts)


def write_index(out: Path, params: dict[str, dict | str],
                with_runs: dict[str, int], manifest: dict) -> Path:
    """Write OUT/index.html (atomically), saying what changed in the answer since the index the
    last build wrote (its record, OUT/.build/answer.json, is then replaced by this one's)."""
    from ..contracts import (
        phase_run_names,
        read_answer_record,
        read_decisions,
        write_answer_record,
        write_decisions,
    )
    from ..words.changes import answer_changes

    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    phases = [p for p in params if not isinstance(params[p], str) and with_runs.get(p)]
    previous = read_answer_record(out)
    # a phase whose plan failed now keeps an older decision.csv: not this build's answer, so not
    # shown as one; the record keeps the answer it last showed, for the build that mends it
    failed = {p for p in phases if plan_failed(out, p)}
    write_decisions(out, [p for p in phases if p not in failed])
    shown = read_decisions(out)
    kept = [r for r in (previous or {}).get("decisions", []) if r.get("phase") in failed]
    record = {"built": created, "decisions": shown + kept, "runs": phase_run_names(out, phases)}
    changes = (answer_changes([r for r in previous["decisions"] if r.get("phase") not in failed], shown,
                              previous["runs"], record["runs"]) if previous else [])
    page = render_index(out, params, with_runs, manifest, created, changes, (previous or {}).get("built", ""))
    target = out / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    write_answer_record(out, record)
    return target
