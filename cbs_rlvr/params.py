"""Phase parameters: params/<phase>.yaml, validated with messages that name the file and key."""

from __future__ import annotations

import hashlib
from pathlib import Path

# ===============================================================================================
# Phase parameters, figures, tables and the report build
# ===============================================================================================

#: Every analysis section, in report order, with the title used in the index.
SECTIONS = {
    "01_load_runs": "Runs in the phase",
    "02_steps_to_target": "Steps and samples to target, McCandlish fit",
    "03_training_curves": "Training curves",
    "04_two_axis": "Prompts vs rollouts",
    "05_gradient_noise": "Gradient noise scale",
    "06_wall_clock": "Wall-clock time",
    "08_plan": "Plan the next runs",
}
SUMMARY_SECTION = "07_summary"
AXES = ("prompts", "rollouts", "iso_batch")
PARAM_SPEC = {  # key: (types, required)
    "phase": ((str,), True),
    "title": ((str,), True),
    "axis": ((str,), True),
    "metric": ((str,), True),
    "prefer_source": ((str, type(None)), False),
    "n_val": ((int,), True),
    "thresholds": ((list,), True),
    "sections": ((list,), True),
    "two_axis_phases": ((list,), False),
    "select": ((dict, type(None)), False),
    "metaparameters": ((list,), False),
    "decision_target": ((float, int, type(None)), False),
}
#: The criteria `select` accepts (see params/README.md and cbs_rlvr/data/select.py).
SELECT_KEYS = ("tags", "group", "name", "config")
DEFAULT_METAPARAMETERS = ["actor_rollout_ref.actor.optim.lr"]


class ParamsError(ValueError):
    """A params/<phase>.yaml file that cannot be used; the message says what to fix."""


def validate_phase_params(raw: object, where: str = "params") -> dict:
    """Check one phase's parameters and return them with defaults filled in.

    Raises ParamsError naming the file and the key on: a non-mapping, an unknown or missing
    key, a wrong type, a threshold outside (0, 1), an unknown axis or section.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(PARAM_SPEC))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(PARAM_SPEC)}")
    missing = sorted(k for k, (_, req) in PARAM_SPEC.items() if req and k not in raw)
    if missing:
        raise ParamsError(f"{where}: missing key(s) {missing}")
    for key, value in raw.items():
        types, _ = PARAM_SPEC[key]
        # bool is an int subclass; n_val: true would otherwise pass as 1
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ParamsError(f"{where}: {key} must be {names}, got {value!r}")
    params = dict(raw)
    params.setdefault("prefer_source", None)
    params.setdefault("two_axis_phases", [])
    if params["axis"] not in AXES:
        raise ParamsError(f"{where}: axis must be one of {list(AXES)}, got {params['axis']!r}")
    if params["n_val"] <= 0:
        raise ParamsError(f"{where}: n_val must be a positive number of validation problems")
    thresholds = params["thresholds"]
    if not thresholds:
        raise ParamsError(f"{where}: thresholds is empty")
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ParamsError(f"{where}: every threshold must be a number in (0, 1), got {t!r}"
                              " (accuracy is a fraction: write 0.6, not 60)")
    params["thresholds"] = sorted(float(t) for t in thresholds)
    bad = [s for s in params["sections"] if s not in SECTIONS]
    if bad:
        raise ParamsError(f"{where}: unknown section(s) {bad}; known: {list(SECTIONS)}")
    if not all(isinstance(p, str) for p in params["two_axis_phases"]):
        raise ParamsError(f"{where}: two_axis_phases must be a list of phase names")
    params["select"] = _validate_select(params.get("select"), where)
    params.setdefault("decision_target", None)
    if params["decision_target"] is not None:
        if params["decision_target"] not in params["thresholds"]:
            raise ParamsError(f"{where}: decision_target {params['decision_target']!r} must be one of the "
                              f"thresholds {params['thresholds']} (the decision is made where S(B) is measured)")
        params["decision_target"] = float(params["decision_target"])
    params.setdefault("metaparameters", list(DEFAULT_METAPARAMETERS))
    if not all(isinstance(k, str) and k.strip() for k in params["metaparameters"]):
        raise ParamsError(f"{where}: metaparameters must be a list of dotted config keys "
                          "(e.g. actor_rollout_ref.actor.optim.lr)")
    return params


def _validate_select(select: object, where: str) -> dict | None:
    """The phase's run selection: None (by name) or a mapping of the criteria in SELECT_KEYS."""
    if select is None:
        return None
    unknown = sorted(set(select) - set(SELECT_KEYS))
    if unknown:
        raise ParamsError(f"{where}: select has unknown key(s) {unknown}; allowed: {list(SELECT_KEYS)}")
    if not any(select.get(k) for k in SELECT_KEYS):
        raise ParamsError(f"{where}: select is empty; give tags, group, name or config (or drop it "
                          "to select runs by their cbs_<phase>_np<N>_nr<M> name)")
    tags = select.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise ParamsError(f"{where}: select.tags must be a list of tag strings, got {tags!r}")
    for key in ("group", "name"):
        if select.get(key) is not None and not isinstance(select[key], str):
            raise ParamsError(f"{where}: select.{key} must be a string (a glob pattern), got {select[key]!r}")
    config = select.get("config")
    if config is not None and not (isinstance(config, dict) and all(isinstance(k, str) for k in config)):
        raise ParamsError(f"{where}: select.config must map dotted config keys to values, got {config!r}")
    return dict(select)


def _yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: what is wrong and where (`line L, column C`), without the
    echoed source and caret lines PyYAML adds."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not problem:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = " ".join(str(problem).split())
    if mark is not None:
        text += f" at line {mark.line + 1}, column {mark.column + 1}"
    return text


def read_yaml(path: Path) -> object:
    """The YAML content of a params file; ParamsError (naming the file) when it is not YAML."""
    import yaml  # imported here: the notebooks that never read params pay nothing for it

    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_all_phase_params(params_dir: str | Path) -> tuple[dict, dict]:
    """Every valid params/<phase>.yaml -> ({phase: params}, {phase: error message of the others})."""
    found, errors = {}, {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        try:
            found[path.stem] = load_phase_params(params_dir, path.stem)
        except ParamsError as exc:
            errors[path.stem] = str(exc)
    return found, errors


def selection_of_invalid(params_dir: str | Path, phase: str) -> dict:
    """What the snapshot selects for a phase whose params file is invalid: its `select` and
    `metric` where those keys are themselves valid, else its runs by name. So a typo elsewhere
    in the file (n_val: 1319.0) does not move the phase's runs out of the snapshot: the file is
    reported and fixed, the data stay as they were."""
    try:
        raw = read_yaml(Path(params_dir) / f"{phase}.yaml")
    except ParamsError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    try:
        select = _validate_select(raw.get("select"), str(phase)) if isinstance(raw.get("select"), dict) else None
    except ParamsError:
        select = None
    found = {"phase": phase, "select": select}
    if isinstance(raw.get("metric"), str):
        found["metric"] = raw["metric"]
    return found


def load_phase_params(params_dir: str | Path, phase: str) -> dict:
    """Read and validate params/<phase>.yaml (the phase's metric, thresholds, n_val, sections)."""
    params_dir = Path(params_dir)
    known = sorted(p.stem for p in params_dir.glob("*.yaml"))
    path = params_dir / f"{phase}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown phase {phase!r}: there is no {path}. Known phases: {known}."
                          " To add a phase, add a params file (see params/README.md).")
    params = validate_phase_params(read_yaml(path), where=str(path))
    if params["phase"] != phase:
        raise ParamsError(f"{path}: phase is {params['phase']!r} but the file is named for {phase!r}")
    return params





def params_fingerprint(params_dir: str | Path) -> str:
    """sha256 of every params file: which runs each phase selects depends on all of them (the
    build reads the source again when it changes; a hand run reuses the build's snapshot only
    while it is the same)."""
    hasher = hashlib.sha256()
    for path in sorted(Path(params_dir).glob("*.yaml")):
        hasher.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return "sha256:" + hasher.hexdigest()
