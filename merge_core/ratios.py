"""The documented ``python -m merge_core.ratios`` (same arguments and output as ``python -m merge_core``), and
the old import path of the resolver and the change report."""
from .report import format_change_report  # noqa: F401
from .resolve import Change, Resolution, resolve_ratios  # noqa: F401

if __name__ == "__main__":
    from .__main__ import run
    run(prog="python -m merge_core.ratios")
