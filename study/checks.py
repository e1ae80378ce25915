"""Checks of config values that stop with one line naming the key and what is allowed."""

from __future__ import annotations

import difflib
import math


def require_int(key: str, value, low: int) -> None:
    """Raise ValueError unless `value` is an integer (not a bool) >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key}={value!r} is invalid: must be an integer >= {low}")


def require_at_most(key: str, value, high, why: str) -> None:
    """Raise ValueError if `value` exceeds `high` (a size that cannot run), saying why."""
    if value > high:
        raise ValueError(f"{key}={value!r} is too large: at most {high:,} ({why})")


def require_bool(key: str, value) -> None:
    """Raise ValueError unless `value` is true or false (not "no", "off", 0 or 1)."""
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} is invalid: must be true or false")


def require_number(key: str, value, low: float | None = None, strict: bool = False) -> None:
    """Raise ValueError unless `value` is a finite number (not a bool), >= low (> low if strict)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low}"
        raise ValueError(f"{key}={value!r} is invalid: must be a finite number{bound}")


def suggest(key: str, allowed, prefix: str = "") -> str:
    """': did you mean <closest>? allowed: ...' for an unknown key."""
    allowed = sorted(str(a) for a in allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f": did you mean {prefix}{close[0]}?" if close else ""
    return f"{hint} allowed: {', '.join(allowed)}"
