"""Temporary shim: the axis logic lives in merge_core.plot_axes; xy_plot and diff_checker switch, then this goes."""
from ..merge_core.plot_axes import *  # noqa: F401,F403
