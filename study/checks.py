"""Checks of config values that stop with one line naming the key and what is allowed."""

from __future__ import annotations


def require_int(key: str, value, low: int) -> None:
    """Raise ValueError unless `value` is an integer (not a bool) >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key}={value!r} is invalid: must be an integer >= {low}")
