"""Checkers for the FHIR primitive datatypes, compiled once from the spec.

Each primitive has a JSON representation (https://hl7.org/fhir/R4/json.html#primitive):
``boolean`` is a JSON boolean, ``integer``/``positiveInt``/``unsignedInt`` are JSON
integers, ``decimal`` is a JSON number, everything else is a JSON string.  String
forms must match the regex the spec publishes for the type
(https://hl7.org/fhir/R4/datatypes.html#primitive), which we read from
:func:`phip.fhir.definitions.types` and compile once, in ASCII mode as the spec's
(Java/XML-Schema) regexes mean ``\\s``/``\\S``.  A few rules the regexes do not
express are added here: the 32-bit range of integers, calendar validity of dates
(no 30 February), no control characters in strings, no empty strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from phip.fhir.definitions import types

#: A checker returns ``None`` for a good value, else a sentence saying what is wrong.
Check = Callable[[object], "str | None"]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: Control characters are not allowed in FHIR strings (https://hl7.org/fhir/R4/datatypes.html#string),
#: nor are lone surrogates (not Unicode characters: JSON text is UTF-8).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

#: What a value of the type looks like, for the diagnostics.
_FORMAT_HINTS: dict[str, str] = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz",
    "instant": "YYYY-MM-DDThh:mm:ss.sss+zz:zz",
    "time": "hh:mm:ss",
    "id": "1-64 of A-Z a-z 0-9 - .",
    "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid: and a lower-case UUID",
    "code": "no leading, trailing or double whitespace",
    "uri": "no whitespace",
    "url": "no whitespace",
    "canonical": "no whitespace",
}

_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _bad_calendar_day(v: str) -> bool:
    """True when a ``YYYY-MM-DD...`` value that matched the regex names no real day."""
    if len(v) < 10:
        return False
    day = int(v[8:10])
    month = int(v[5:7])
    if day <= 28 or (day <= _DAYS[month] and month != 2):
        return False
    if month != 2:
        return True
    year = int(v[0:4])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day > (29 if leap else 28)


def _show(v: object) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


@dataclass(frozen=True, slots=True)
class Primitive:
    """A compiled primitive type.

    ``check`` is exact and says what is wrong.  ``fast``, for string types, is a
    C-level test that is *sufficient* for a non-empty string to be valid (a
    simpler regex, or ``str.isprintable``); the walker calls ``check`` only when
    ``fast`` fails, so the common case costs one C call.  Types needing a check
    beyond a regex (calendar days) have no ``fast``.
    """

    name: str
    json_kind: str  # "string" | "number" | "integer" | "boolean"
    check: Check
    fast: Callable[[str], object] | None = None


#: Sufficient fast tests by type: printable ASCII (no whitespace for the uri family,
#: single inner spaces for code), or plain printable text for string and markdown.
_PRINTABLE_NO_SPACE = re.compile(r"[!-~]+").fullmatch
_FAST: dict[str, Callable[[str], object]] = {
    "string": str.isprintable,
    "markdown": str.isprintable,
    "code": re.compile(r"[!-~]+(?: [!-~]+)*").fullmatch,
    "uri": _PRINTABLE_NO_SPACE,
    "url": _PRINTABLE_NO_SPACE,
    "canonical": _PRINTABLE_NO_SPACE,
}
_BASE64_CHARS = re.compile(r"[0-9a-zA-Z+/=]+").fullmatch
_ASCII_SPACE = re.compile(r"[ \t\n\r\f\v]+")


def _base64_check(v: object) -> str | None:
    """base64Binary, exactly as the spec regex ``(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+`` says
    (whitespace only between whole quads), but linear: megabyte attachments are common
    and the regex backtracks through every quad."""
    if type(v) is not str:
        return f"must be a JSON string for a base64Binary, not {type(v).__name__.replace('NoneType', 'null')}"
    if not v:
        return "must not be an empty string (omit the base64Binary instead)"
    if len(v) % 4 == 0 and _BASE64_CHARS(v) is not None:
        return None
    parts = [p for p in _ASCII_SPACE.split(v) if p]
    if parts and all(len(p) % 4 == 0 for p in parts) and _BASE64_CHARS("".join(parts)) is not None:
        return None
    return f"{_show(v)} is not a valid base64Binary (expected base64 in whole 4-character groups)"


#: Types whose spec regex alone is exact (it admits no control character).
_REGEX_EXACT = frozenset({"id", "oid", "uuid", "time"})


def non_capturing(regex: str) -> str:
    """``regex`` with its capturing groups made non-capturing: the same language, matched
    several times faster by ``re`` (the spec's regexes use no back-references)."""
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(" and regex[i + 1 : i + 2] != "?":
            out.append("(?:")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def compile_spec(regex: str) -> re.Pattern[str]:
    """Compile one of the spec's regexes as it means: whole value, ASCII ``\\s``/``\\S``."""
    return re.compile(non_capturing(regex), re.ASCII)


def _string_check(name: str, regex: str | None) -> Check:
    fullmatch = compile_spec(regex).fullmatch if regex else None
    hint = _FORMAT_HINTS.get(name)
    bad_format = f"is not a valid {name}" + (f" (expected {hint})" if hint else "")
    calendar = name in ("date", "dateTime", "instant")

    def check(v: object) -> str | None:
        if type(v) is not str:
            return f"must be a JSON string for a {name}, not {type(v).__name__.replace('NoneType', 'null')}"
        if not v:
            return f"must not be an empty string (omit the {name} instead)"
        if fullmatch is not None and fullmatch(v) is None:
            return f"{_show(v)} {bad_format}"
        if _CONTROL.search(v) is not None:
            return f"{_show(v)} contains a control character or lone surrogate, which FHIR strings do not allow"
        if calendar and _bad_calendar_day(v):
            return f"{_show(v)} is not a valid {name} (no such day)"
        return None

    return check


def _boolean_check(v: object) -> str | None:
    if type(v) is not bool:
        return f"must be a JSON boolean (true or false), not {_show(v)}"
    return None


def _decimal_check(v: object) -> str | None:
    t = type(v)
    if t is not float and t is not int:
        return f"must be a JSON number for a decimal, not {_show(v)}"
    if v != v or v in (float("inf"), float("-inf")):
        return "must be a finite number"
    return None


def _integer_check(name: str, low: int) -> Check:
    def check(v: object) -> str | None:
        if type(v) is not int:
            return f"must be a JSON integer for a {name}, not {_show(v)}"
        if v < low or v > INT32_MAX:
            return f"{v} is out of range for a {name} ({low}..{INT32_MAX})"
        return None

    return check


@cache
def primitives() -> dict[str, Primitive]:
    """Every FHIR primitive type, compiled from the definitions (built once)."""
    out: dict[str, Primitive] = {}
    for name, td in types().items():
        if td.kind != "primitive-type":
            continue
        if name == "boolean":
            out[name] = Primitive(name, "boolean", _boolean_check)
        elif name == "decimal":
            out[name] = Primitive(name, "number", _decimal_check)
        elif name == "integer":
            out[name] = Primitive(name, "integer", _integer_check(name, INT32_MIN))
        elif name == "positiveInt":
            out[name] = Primitive(name, "integer", _integer_check(name, 1))
        elif name == "unsignedInt":
            out[name] = Primitive(name, "integer", _integer_check(name, 0))
        elif name == "base64Binary":
            out[name] = Primitive(name, "string", _base64_check)
        else:
            fast = _FAST.get(name)
            if fast is None and name in _REGEX_EXACT and td.regex:
                fast = compile_spec(td.regex).fullmatch
            out[name] = Primitive(name, "string", _string_check(name, td.regex), fast)
    return out
