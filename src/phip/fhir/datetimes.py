"""FHIR date/time values as integer microsecond ranges (UTC).

A FHIR ``date``/``dateTime``/``instant`` is a range whose width is its precision:
``2013`` is the whole year, ``2013-05-01T10:00:00Z`` one second.  Search compares
ranges (https://hl7.org/fhir/R4/search.html#date), so every value becomes
``(low, high)`` with both ends inclusive.  A value without a timezone is taken as UTC.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta

MIN = -(2**62)
MAX = 2**62
_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def now_us() -> int:
    return time.time_ns() // 1000


def to_instant(us: int) -> str:
    """Microseconds since the epoch → FHIR instant text (``2026-01-02T03:04:05.123456Z``)."""
    dt = _EPOCH + timedelta(microseconds=us)
    if dt.year < 1000:  # strftime's %Y does not pad years before 1000 on every platform: keep its text
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (f"{dt.year}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
            f"{dt.microsecond:06d}Z")


def _seconds(y: int, m: int, d: int, hh: int, mm: int, ss: int) -> int:
    return calendar.timegm((y, m, d, hh, mm, ss, 0, 0, 0))


def date_range(text: str) -> tuple[int, int]:
    """The inclusive microsecond range of a FHIR date/dateTime/instant literal.

    Raises ``ValueError`` for text that is not a FHIR date.
    """
    m = _RE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date/time: {text!r}")
    g = m.groupdict()
    y = int(g["y"])
    tz = g["tz"]
    off = 0
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        off = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if g["m"] is None:
        lo = _seconds(y, 1, 1, 0, 0, 0)
        hi = _seconds(y + 1, 1, 1, 0, 0, 0)
        return lo * _US, hi * _US - 1
    mo = int(g["m"])
    if not 1 <= mo <= 12:
        raise ValueError(f"bad month in {text!r}")
    if g["d"] is None:
        lo = _seconds(y, mo, 1, 0, 0, 0)
        hi = _seconds(y + (mo == 12), mo % 12 + 1, 1, 0, 0, 0)
        return lo * _US, hi * _US - 1
    d = int(g["d"])
    if not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise ValueError(f"bad day in {text!r}")
    if g["H"] is None:
        lo = _seconds(y, mo, d, 0, 0, 0)
        return lo * _US, (lo + 86400) * _US - 1
    hh = int(g["H"])
    mi = int(g["M"] or 0)
    if hh > 24 or mi > 59:
        raise ValueError(f"bad time in {text!r}")
    if g["M"] is None:
        lo = _seconds(y, mo, d, hh, 0, 0) - off
        return lo * _US, (lo + 3600) * _US - 1
    if g["S"] is None:
        lo = _seconds(y, mo, d, hh, mi, 0) - off
        return lo * _US, (lo + 60) * _US - 1
    ss = int(g["S"])
    if ss > 60:
        raise ValueError(f"bad seconds in {text!r}")
    base = (_seconds(y, mo, d, hh, mi, ss) - off) * _US
    frac = g["f"]
    if frac is None:
        return base, base + _US - 1
    digits = min(len(frac), 6)
    step = 10 ** (6 - digits)
    lo = base + int(frac[:6].ljust(6, "0")[:digits]) * step
    return lo, lo + step - 1


def parse_instant(text: str) -> int:
    """The start of a date/time literal, in microseconds (for ``_since``, ``_at``)."""
    return date_range(text)[0]
