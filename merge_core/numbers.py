"""Reading a ratio or weight typed by a user: every text field of the pack accepts the same numbers."""
from __future__ import annotations

import math


def finite_float(text: str) -> float | None:
    """The number `text` spells (Python's float syntax, surrounding spaces allowed), or None when it is not
    one or is infinite or NaN: a merge ratio must be finite, and "nan"/"inf" are typos, not requests."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
