"""Shared helpers for the CBS-RLVR notebooks (WIP shim: re-exports the parts under development)."""
import importlib as _importlib

for _name in ("wip_data", "wip_analysis", "wip_plots"):
    try:
        _mod = _importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise
        continue
    globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})
