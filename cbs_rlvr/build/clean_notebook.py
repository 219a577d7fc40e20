"""A section notebook's .ipynb as it is committed: no outputs, no execution counts, no editor
metadata. One implementation for the three places that need it: `make sync-notebooks` (files in
place), the git clean filter that `make setup` installs (stdin to stdout: a notebook opened,
run or autosaved in JupyterLab shows no change in `git status`), and the pre-commit hook.

  python3 cbs_rlvr/build/clean_notebook.py                  stdin -> stdout (the git filter)
  python3 cbs_rlvr/build/clean_notebook.py a.ipynb b.ipynb  in place

It does what `jupyter nbconvert --clear-output --ClearMetadataPreprocessor.enabled=True` does
with the masks below (tests/test_jupyterlab.py compares the two on notebooks Lab saved), with the
standard library only: git runs it for every changed notebook, and nbformat's import alone takes
seconds; `python3` of any environment can run it, the project's or not.
"""

import json
import sys

#: Notebook metadata kept: what papermill needs to pick a kernel, and jupytext's header.
KEEP_NOTEBOOK_METADATA = ("kernelspec", "jupytext")
#: Code-cell metadata kept: the tags (the `parameters` cell's).
KEEP_CELL_METADATA = ("tags",)
#: Cleared from code cells with their outputs (nbconvert's ClearOutputPreprocessor).
_OUTPUT_METADATA = ("collapsed", "scrolled")
#: Never stored in files (nbformat's strip_transient).
_TRANSIENT_NOTEBOOK = ("orig_nbformat", "orig_nbformat_minor", "signature")


def _lines(value):
    return value.splitlines(True) if isinstance(value, str) else value


def clean_notebook_text(text):
    """The committed form of one notebook's JSON text (nbformat 4), as nbformat writes it."""
    nb = json.loads(text)
    metadata = nb.get("metadata", {})
    nb["metadata"] = {k: v for k, v in metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    for cell in nb.get("cells", []):
        cell["source"] = _lines(cell.get("source", ""))
        for attachment in (cell.get("attachments") or {}).values():
            for key, value in list(attachment.items()):
                if key.startswith("text/") or key in ("application/javascript", "image/svg+xml"):
                    attachment[key] = _lines(value)
        cell_metadata = cell.setdefault("metadata", {})
        cell_metadata.pop("trusted", None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
            cell["metadata"] = {k: v for k, v in cell_metadata.items()
                                if k in KEEP_CELL_METADATA and k not in _OUTPUT_METADATA}
    for key in _TRANSIENT_NOTEBOOK:
        nb["metadata"].pop(key, None)
    return json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False) + "\n"


def main(paths):
    if not paths:
        text = sys.stdin.buffer.read().decode("utf-8")
        sys.stdout.buffer.write(clean_notebook_text(text).encode("utf-8"))
        return 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        cleaned = clean_notebook_text(text)
        if cleaned != text:  # an unchanged file keeps its time stamp
            with open(path, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(cleaned)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
