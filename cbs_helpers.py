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


def _cli(argv=None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "snapshot":
        return main(argv)  # noqa: F821 (wip_data)
    return report_main(argv)  # noqa: F821 (wip_plots)


if __name__ == "__main__":
    import sys

    sys.exit(_cli())
