"""Duration strings of the procedure language: ``500ms``, ``30s``, ``5m``, ``48h``, ``7d``.

Every duration is at most ``MAX_DURATION`` (365 days): a timeout, wait, reminder or retry
interval longer than a year is a typo, and the engine adds durations to the workflow clock,
where absurd values (``999999999d``) would overflow the datetime instead of failing cleanly.
"""
from __future__ import annotations

import re
from datetime import timedelta

from procedures.errors import ProcedureError

MAX_DURATION = timedelta(days=365)
MAX_DURATION_TEXT = "365d"
_DURATION = re.compile(r"([1-9][0-9]{0,11})(ms|s|m|h|d)")
_UNITS: dict[str, timedelta] = {  # largest first (format_duration relies on the order)
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_UNIT_MS = {unit: round(size.total_seconds() * 1000) for unit, size in _UNITS.items()}
_MAX_MS = round(MAX_DURATION.total_seconds() * 1000)
_HINT = "write a positive whole number and a unit, e.g. 500ms, 30s, 5m, 48h, 7d"


def duration_problem(text: object) -> str | None:
    """Why ``text`` is not a valid duration (a sentence with a fix), or None when it is one."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return f"invalid duration {text!r}: {_HINT}"
    if int(match.group(1)) * _UNIT_MS[match.group(2)] > _MAX_MS:  # in ms: no timedelta overflow
        return (f"duration {text!r} is longer than {MAX_DURATION_TEXT}, the longest timeout, wait or "
                f"interval allowed; shorten it (e.g. 30d)")
    return None


def parse_duration(text: object) -> timedelta:
    """Parse a positive integer followed by a unit (ms, s, m, h, d), at most 365d, into a timedelta."""
    problem = duration_problem(text)
    if problem is not None:
        raise ProcedureError(problem)
    match = _DURATION.fullmatch(text)  # type: ignore[arg-type]  # checked above
    assert match is not None
    return int(match.group(1)) * _UNITS[match.group(2)]


def is_duration(text: object) -> bool:
    """True when ``text`` is a valid duration string (within the maximum)."""
    return duration_problem(text) is None


def format_duration(value: timedelta) -> str:
    """Write a timedelta with the largest unit that represents it exactly (``2d``, ``90s``)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms <= 0:
        raise ProcedureError(f"durations must be positive, got {value!r}")
    for unit, size in _UNITS.items():
        size_ms = round(size.total_seconds() * 1000)
        if total_ms % size_ms == 0:
            return f"{total_ms // size_ms}{unit}"
    raise AssertionError("unreachable: 1ms divides every whole millisecond")
