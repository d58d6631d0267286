"""Search-index extraction: every search index row of one resource, from the spec.

One generic code path serves all resource types: for each type we compile,
once, the R4 SearchParameter expressions that apply to it (only the ``|``-parts
of shared expressions whose head is that type), then evaluate them with
:mod:`phip.fhir.fhirpath` and turn the typed nodes into rows according to the
parameter type (string, token, date, reference, quantity, number, uri,
composite) and the node's FHIR type (a ``CodeableConcept`` gives one token row
per coding, a ``HumanName`` one string row per name part, a ``Period`` one date
range, …).

Row formats (all plain tuples; ``grp`` is 0 except in composite rows):

* ``strings``    ``(param, grp, norm, raw)``
* ``tokens``     ``(param, grp, system, code, text)``   text normalised like ``norm``
* ``dates``      ``(param, grp, low, high)``            µs since the epoch, UTC, both inclusive
* ``refs``       ``(param, grp, target_type, target_id, url)``
* ``quantities`` ``(param, grp, low, high, system, code, unit)``
* ``numbers``    ``(param, grp, value)``
* ``uris``       ``(param, grp, value)``

Extra rows carry a modifier in ``param``: ``identifier:of-type`` tokens
(system = the type coding's system, code = ``"{type code}|{value}"``) and
``subject:identifier`` tokens for ``Reference.identifier``.  A composite
parameter ``code`` yields, for its i-th node, the rows of its j-th component
(0-based) under ``f"{code}${j}"`` with ``grp = i + 1``.

What each node type gives, per parameter type:

* string: string/markdown/code/uri… as themselves; HumanName family, given,
  prefix, suffix, text; Address line, city, district, state, postalCode,
  country, text.  ``norm`` is :func:`phip.fhir.search.text.normalize`.
* token: Coding (system, code, display); CodeableConcept one row per coding
  plus ``(None, None, text)``; Identifier (system, value, type.text) plus
  ``:of-type`` rows; ContactPoint (its ``system`` — phone/email… — and value);
  code/string/id/uri/boolean/number ``(None, text, None)``.
* date: date/dateTime/instant (and a string that parses as one), Period (open
  ends are :data:`MIN`/:data:`MAX`), Timing (each ``event`` and
  ``repeat.boundsPeriod``).
* reference: Reference.reference (relative, absolute, ``urn:``; ``#local``
  skipped) plus ``:identifier`` rows; canonical/uri (a ``|version`` canonical
  gives a second row without it); an inline resource (``Bundle.entry[0].resource``).
* quantity: Quantity and its profiles (Age, Duration…), Money (system
  ``urn:iso:std:iso:4217``), Range (open ends ±inf).
* number: integer/decimal and subtypes.  uri: uri/url/canonical/oid/uuid.
* An Extension node (``Patient.extension('…')``) is replaced by its ``value[x]``.

Not indexed (no row, no error): SampledData, Attachment, Range under a number
parameter (RiskAssessment ``probability``), Quantity/Range/Reference under a
token parameter (Group ``characteristic-value``), Timing bounds other than a
Period, values that do not parse (a bad date).

:func:`probe_values` gives, per row, a FHIR search ``(param, value)`` that a
correct server must match against this resource; the test-suite uses it to
check the whole search stack against the official examples.
"""

from __future__ import annotations

import math
import re
from calendar import isleap, monthrange
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from phip.fhir import fhirpath
from phip.fhir.definitions import resource_types, search_params_by_url, search_params_for, types
from phip.fhir.fhirpath import Compiled, Item, is_subtype, new_env, output_types, parse_reference
from phip.fhir.search.text import normalize

__all__ = [
    "MAX",
    "MIN",
    "Alias",
    "ParamPlan",
    "ResourceIndex",
    "aliases",
    "composite_component_types",
    "date_range",
    "index_resource",
    "normalize_text",
    "params_for",
    "parse_reference",
    "probe_values",
    "storable",
]

MIN = -(2**62)  #: open start of a Period (µs)
MAX = 2**62  #: open end of a Period (µs)

SKIPPED_PARAMS = frozenset({"_id", "_lastUpdated"})  # the store indexes these from its own columns

StringRow = tuple[str, int, str, str]
TokenRow = tuple[str, int, str | None, str | None, str | None]
DateRow = tuple[str, int, int, int]
RefRow = tuple[str, int, str | None, str | None, str | None]
QuantityRow = tuple[str, int, float, float, str | None, str | None, str | None]
NumberRow = tuple[str, int, float]
UriRow = tuple[str, int, str]
Probe = tuple[str, str]


@dataclass(slots=True)
class ResourceIndex:
    """All search index rows of one resource, by table (formats in the module docstring)."""

    strings: list[StringRow] = field(default_factory=list)
    tokens: list[TokenRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    refs: list[RefRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)

    def row_count(self) -> int:
        return (
            len(self.strings)
            + len(self.tokens)
            + len(self.dates)
            + len(self.refs)
            + len(self.quantities)
            + len(self.numbers)
            + len(self.uris)
        )

    def _dedupe(self) -> None:
        # spelled out: this runs once per stored resource
        if len(self.strings) > 1:
            self.strings = list(dict.fromkeys(self.strings))
        if len(self.tokens) > 1:
            self.tokens = list(dict.fromkeys(self.tokens))
        if len(self.dates) > 1:
            self.dates = list(dict.fromkeys(self.dates))
        if len(self.refs) > 1:
            self.refs = list(dict.fromkeys(self.refs))
        if len(self.quantities) > 1:
            self.quantities = list(dict.fromkeys(self.quantities))
        if len(self.numbers) > 1:
            self.numbers = list(dict.fromkeys(self.numbers))
        if len(self.uris) > 1:
            self.uris = list(dict.fromkeys(self.uris))


# --------------------------------------------------------------------------- normalisation


def normalize_text(s: str) -> str:
    """Fold text for string search (lower-case, accents dropped, full-width ASCII
    to half-width, whitespace collapsed): :func:`phip.fhir.search.text.normalize`,
    the one the query side uses too, so both sides compare alike."""
    return normalize(s)


# --------------------------------------------------------------------------- dates

_DT_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?\Z"
)
_EPOCH = date(1970, 1, 1).toordinal()
_DAY = 86_400_000_000
_SEC = 1_000_000


def date_range(text: str) -> tuple[int, int] | None:
    """The inclusive µs range (UTC) a FHIR date/dateTime/instant denotes, at its precision.

    ``2013`` is the whole year, ``2013-05`` the month, a date the day, a
    dateTime the second (or the precision of its fraction).  A dateTime without
    timezone is read as UTC.  ``None`` when the text is not a valid value.
    Same ranges as :func:`phip.fhir.datetimes.date_range` (the query side; the
    test-suite checks they agree), without its ``datetime`` objects: this one
    runs for every indexed date.
    """
    m = _DT_RE.match(text)
    if m is None:
        return None
    ys, mos, ds, hs, mis, ss, frac, tz = m.groups()
    y = int(ys)
    try:
        if mos is None:
            lo = date(y, 1, 1).toordinal() - _EPOCH
            return lo * _DAY, (lo + (366 if isleap(y) else 365)) * _DAY - 1
        mo = int(mos)
        if ds is None:
            lo = date(y, mo, 1).toordinal() - _EPOCH
            return lo * _DAY, (lo + monthrange(y, mo)[1]) * _DAY - 1
        day = date(y, mo, int(ds)).toordinal() - _EPOCH
    except ValueError:
        return None
    base = day * _DAY
    if hs is None:
        return base, base + _DAY - 1
    h, mi = int(hs), int(mis)
    if h > 23 or mi > 59:
        return None
    t = base + (h * 3600 + mi * 60) * _SEC
    if ss is None:
        width = 60 * _SEC
    else:
        sec = int(ss)
        if sec > 60:
            return None
        t += sec * _SEC  # a leap second (60) runs into the next minute, as timegm does
        if frac:
            digits = frac[:6]
            t += int(digits.ljust(6, "0"))
            width = 10 ** (6 - len(digits))
        else:
            width = _SEC
    if tz is not None and tz != "Z":
        off = (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * _SEC
        t = t - off if tz[0] == "+" else t + off
    return t, t + width - 1


# --------------------------------------------------------------------------- probes

_ESC_RE = re.compile(r"([\\,$|])")


def _esc(s: str) -> str:
    """Escape a search value part (``\\``, ``,``, ``$``, ``|``) as FHIR search requires."""
    return _ESC_RE.sub(r"\\\1", s) if ("\\" in s or "," in s or "$" in s or "|" in s) else s


def _num_text(v: Any) -> str:
    """A JSON number as search text (``5.0`` keeps its decimal point: its precision)."""
    return str(v) if type(v) is int else repr(float(v))


# --------------------------------------------------------------------------- emitters

_DT_CTX = fhirpath.type_ctx("dateTime")
# Each emitter gets (index, param, grp, node, probes); ``probes`` is None except
# for probe_values().  Dispatch is by the node's FHIR type (subtypes resolved once).

Sink = list[Probe] | None


def _unwrap_extension(node: Item) -> list[Item]:
    """The ``value[x]`` of an Extension node, typed from its JSON key suffix."""
    v = node[0]
    out: list[Item] = []
    if type(v) is dict:
        for k, x in v.items():
            if k.startswith("value") and len(k) > 5:
                t = _suffix_types().get(k[5:])
                if t is not None and x is not None:
                    out.append((x, t, fhirpath.type_ctx(t)))
    return out


@lru_cache(maxsize=1)
def _suffix_types() -> dict[str, str]:
    return {t[0].upper() + t[1:]: t for t in types()}


# -- string


def _str_value(ix: ResourceIndex, p: str, g: int, v: Any, probes: Sink) -> None:
    if type(v) is not str or not v:
        return
    ix.strings.append((p, g, normalize(v), v))
    if probes is not None:
        probes.append((p, _esc(v)))


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _str_parts(parts: tuple[str, ...]) -> Any:
    def emit(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
        v = node[0]
        if type(v) is not dict:
            return
        for k in parts:
            x = v.get(k)
            if x is None:
                continue
            if type(x) is list:
                for item in x:
                    _str_value(ix, p, g, item, probes)
            else:
                _str_value(ix, p, g, x, probes)

    return emit


def _str_prim(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    _str_value(ix, p, g, node[0], probes)


def _str_cc(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is dict:
        _str_value(ix, p, g, v.get("text"), probes)


# -- token


def _token(ix: ResourceIndex, p: str, g: int, system: Any, code: Any, display: Any, probes: Sink) -> None:
    s = system if type(system) is str and system else None
    c = code if type(code) is str and code else None
    t = normalize(display) if type(display) is str and display else None
    if s is None and c is None and t is None:
        return
    ix.tokens.append((p, g, s, c, t))
    if probes is not None:
        if c is not None:
            probes.append((p, f"{_esc(s)}|{_esc(c)}" if s is not None else _esc(c)))
        elif s is not None:
            probes.append((p, f"{_esc(s)}|"))
        elif type(display) is str:
            probes.append((f"{p}:text", _esc(display)))


def _tok_coding(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is dict:
        _token(ix, p, g, v.get("system"), v.get("code"), v.get("display"), probes)


def _tok_cc(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    codings = v.get("coding")
    if type(codings) is list:
        for c in codings:
            if type(c) is dict:
                _token(ix, p, g, c.get("system"), c.get("code"), c.get("display"), probes)
    text = v.get("text")
    if type(text) is str and text:
        _token(ix, p, g, None, None, text, probes)


def _tok_identifier(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    typ = v.get("type")
    value = v.get("value")
    type_text = typ.get("text") if type(typ) is dict else None
    _token(ix, p, g, v.get("system"), value, type_text, probes)
    if g == 0 and type(typ) is dict and type(value) is str and value:
        codings = typ.get("coding")
        if type(codings) is list:
            pm = f"{p}:of-type"
            for c in codings:
                if type(c) is not dict:
                    continue
                tc = c.get("code")
                if type(tc) is not str or not tc:
                    continue
                ts = c.get("system") if type(c.get("system")) is str else None
                ix.tokens.append((pm, g, ts, f"{tc}|{value}", None))
                if probes is not None:
                    probes.append((pm, f"{_esc(ts or '')}|{_esc(tc)}|{_esc(value)}"))


def _tok_contact(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    value = v.get("value")
    if type(value) is not str or not value:
        return
    system = v.get("system")
    ix.tokens.append((p, g, system if type(system) is str and system else None, value, None))
    if probes is not None:
        # ContactPoint.system is not a token system in FHIR: query by value only
        probes.append((p, _esc(value)))


def _tok_prim(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is bool:
        s = "true" if v else "false"
    elif type(v) is str:
        s = v
    elif type(v) in (int, float):
        s = _num_text(v)
    else:
        return
    if not s:
        return
    ix.tokens.append((p, g, None, s, None))
    if probes is not None:
        probes.append((p, _esc(s)))


# -- date


def _date_prim(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not str:
        return
    r = date_range(v)
    if r is None:
        return
    ix.dates.append((p, g, r[0], r[1]))
    if probes is not None:
        probes.append((p, "eq" + _esc(v)))


def _period(ix: ResourceIndex, p: str, g: int, v: Any, probes: Sink) -> None:
    if type(v) is not dict:
        return
    start, end = v.get("start"), v.get("end")
    lo_r = date_range(start) if type(start) is str else None
    hi_r = date_range(end) if type(end) is str else None
    if lo_r is None and hi_r is None:
        return
    lo = lo_r[0] if lo_r is not None else MIN
    hi = hi_r[1] if hi_r is not None else MAX
    if lo > hi:  # an end before the start (invalid, per-1): keep low <= high
        lo, hi = hi_r[0], lo_r[1]  # type: ignore[index]
    ix.dates.append((p, g, lo, hi))
    if probes is not None:
        if lo_r is not None:
            probes.append((p, "ge" + _esc(str(start))))
        if hi_r is not None and (lo_r is None or lo_r[0] <= hi_r[1]):
            probes.append((p, "le" + _esc(str(end))))


def _date_period(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    _period(ix, p, g, node[0], probes)


def _date_timing(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    events = v.get("event")
    if type(events) is list:
        for e in events:
            if type(e) is str:
                _date_prim(ix, p, g, (e, "dateTime", _DT_CTX), probes)
    rep = v.get("repeat")
    if type(rep) is dict and "boundsPeriod" in rep:
        _period(ix, p, g, rep["boundsPeriod"], probes)


# -- reference


def _ref_string(ix: ResourceIndex, p: str, g: int, ref: Any, probes: Sink, canonical: bool) -> None:
    if type(ref) is not str or not ref:
        return
    parsed = parse_reference(ref)
    if parsed is None:
        return
    versioned = canonical and "|" in ref
    if versioned:
        base = ref.split("|", 1)[0]
        parsed_base = parse_reference(base)
        if parsed_base is not None:
            ix.refs.append((p, g, parsed_base[0], parsed_base[1], base))
            if probes is not None and _searchable_url(base):
                probes.append((p, _esc(base)))
        parsed = (parsed_base[0], parsed_base[1], ref) if parsed_base is not None else (None, None, ref)
    t, i, url = parsed
    ix.refs.append((p, g, t, i, url))
    if probes is not None:
        if url is None:
            probes.append((p, f"{t}/{_esc(i or '')}"))
        elif _searchable_url(url):
            probes.append((p, _esc(url)))


def _searchable_url(url: str) -> bool:
    """Whether a reference search value can name this url unambiguously: a bare
    string (``library-helpers``) would be read as a resource id instead."""
    return "://" in url or url.startswith("urn:")


def _ref_reference(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    _ref_string(ix, p, g, v.get("reference"), probes, False)
    ident = v.get("identifier")
    if g == 0 and type(ident) is dict:
        s, val = ident.get("system"), ident.get("value")
        if type(val) is str and val:
            s = s if type(s) is str and s else None
            pm = f"{p}:identifier"
            ix.tokens.append((pm, g, s, val, None))
            if probes is not None:
                probes.append((pm, f"{_esc(s)}|{_esc(val)}" if s else _esc(val)))


def _ref_canonical(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    _ref_string(ix, p, g, node[0], probes, True)


def _ref_uri(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    _ref_string(ix, p, g, node[0], probes, False)


def _ref_resource(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    rt, rid = v.get("resourceType"), v.get("id")
    if type(rt) is str and type(rid) is str and rid:
        ix.refs.append((p, g, rt, rid, None))
        if probes is not None:
            probes.append((p, f"{rt}/{_esc(rid)}"))


# -- quantity / number


def _num(x: Any) -> float | None:
    if type(x) in (int, float):
        f = float(x)
        return f if math.isfinite(f) else None
    return None


def _qty_probe(v: float | str, system: str | None, code: str | None, unit: str | None) -> str:
    if system and code:
        return f"{v}|{_esc(system)}|{_esc(code)}"
    if code or unit:
        return f"{v}||{_esc(code or unit or '')}"
    return str(v)


def _s(x: Any) -> str | None:
    return x if type(x) is str and x else None


def _qty_quantity(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    f = _num(v.get("value"))
    if f is None:
        return
    system, code, unit = v.get("system"), v.get("code"), v.get("unit")
    if type(system) is not str or not system:
        system = None
    if type(code) is not str or not code:
        code = None
    if type(unit) is not str or not unit:
        unit = None
    ix.quantities.append((p, g, f, f, system, code, unit))
    if probes is not None:
        probes.append((p, _qty_probe(_num_text(v["value"]), system, code, unit)))


def _qty_money(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    f = _num(v.get("value"))
    if f is None:
        return
    cur = _s(v.get("currency"))
    system = "urn:iso:std:iso:4217" if cur else None
    ix.quantities.append((p, g, f, f, system, cur, None))
    if probes is not None:
        probes.append((p, _qty_probe(_num_text(v["value"]), system, cur, None)))


def _qty_range(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not dict:
        return
    low, high = v.get("low"), v.get("high")
    lo = _num(low.get("value")) if type(low) is dict else None
    hi = _num(high.get("value")) if type(high) is dict else None
    if lo is None and hi is None:
        return
    q: dict[str, Any] = low if lo is not None and type(low) is dict else high  # type: ignore[assignment]
    system, code, unit = _s(q.get("system")), _s(q.get("code")), _s(q.get("unit"))
    ix.quantities.append(
        (p, g, lo if lo is not None else -math.inf, hi if hi is not None else math.inf, system, code, unit)
    )
    if probes is not None:
        if lo is not None:
            probes.append((p, "ge" + _qty_probe(_num_text(q["value"]), system, code, unit)))
        else:
            probes.append((p, "le" + _qty_probe(_num_text(q["value"]), system, code, unit)))


def _number(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    f = _num(node[0])
    if f is None:
        return
    ix.numbers.append((p, g, f))
    if probes is not None:
        probes.append((p, _num_text(node[0])))


# -- uri


def _uri(ix: ResourceIndex, p: str, g: int, node: Item, probes: Sink) -> None:
    v = node[0]
    if type(v) is not str or not v:
        return
    ix.uris.append((p, g, v))
    if probes is not None:
        probes.append((p, _esc(v)))


# param type -> {base FHIR type handled: emitter}; subtypes inherit (Age -> Quantity, code -> string)
_HANDLERS: dict[str, dict[str, Any]] = {
    "string": {
        "string": _str_prim,
        "uri": _str_prim,
        "HumanName": _str_parts(_NAME_PARTS),
        "Address": _str_parts(_ADDRESS_PARTS),
        "CodeableConcept": _str_cc,
    },
    "token": {
        "Coding": _tok_coding,
        "CodeableConcept": _tok_cc,
        "Identifier": _tok_identifier,
        "ContactPoint": _tok_contact,
        "string": _tok_prim,
        "uri": _tok_prim,
        "boolean": _tok_prim,
        "integer": _tok_prim,
        "decimal": _tok_prim,
    },
    "date": {
        "date": _date_prim,
        "dateTime": _date_prim,
        "instant": _date_prim,
        "string": _date_prim,  # performedString etc.: indexed only when it parses as a date
        "Period": _date_period,
        "Timing": _date_timing,
    },
    "reference": {
        "Reference": _ref_reference,
        "canonical": _ref_canonical,
        "uri": _ref_uri,
        "Resource": _ref_resource,
    },
    "quantity": {
        "Quantity": _qty_quantity,
        "Money": _qty_money,
        "Range": _qty_range,
    },
    "number": {"integer": _number, "decimal": _number},
    "uri": {"uri": _uri, "string": _uri},
}

# the param type a node type naturally belongs to (for spec errors in composite definitions)
_NATURAL = (
    ("Reference", "reference"),
    ("Coding", "token"),
    ("CodeableConcept", "token"),
    ("Identifier", "token"),
    ("ContactPoint", "token"),
    ("code", "token"),
    ("boolean", "token"),
    ("date", "date"),
    ("dateTime", "date"),
    ("instant", "date"),
    ("Period", "date"),
    ("Timing", "date"),
    ("Quantity", "quantity"),
    ("Money", "quantity"),
    ("Range", "quantity"),
    ("integer", "number"),
    ("decimal", "number"),
    ("uri", "uri"),
    ("string", "string"),
    ("HumanName", "string"),
    ("Address", "string"),
)

_DISPATCH: dict[str, dict[str, Any]] = {pt: {} for pt in _HANDLERS}
_NONE = object()


def _handler(ptype: str, ntype: str) -> Any:
    """The emitter for a node type under a param type (subtypes resolved once, cached)."""
    cache = _DISPATCH.setdefault(ptype, {})
    h = cache.get(ntype, _NONE)
    if h is _NONE:
        h = None
        table = _HANDLERS.get(ptype, {})
        if ntype in table:
            h = table[ntype]
        elif ptype == "reference" and is_subtype(ntype, "Resource"):
            h = _ref_resource
        else:
            for base, fn in table.items():
                if is_subtype(ntype, base):
                    h = fn
                    break
        cache[ntype] = h
    return h


def _emit(ix: ResourceIndex, ptype: str, p: str, g: int, nodes: list[Item], probes: Sink) -> None:
    cache = _DISPATCH.setdefault(ptype, {})
    for node in nodes:
        h = cache.get(node[1], _NONE)
        if h is _NONE:
            h = _handler(ptype, node[1])
        if h is not None:
            h(ix, p, g, node, probes)
        elif node[1] == "Extension":
            _emit(ix, ptype, p, g, _unwrap_extension(node), probes)


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class ParamPlan:
    """One search parameter compiled for one resource type."""

    code: str
    type: str
    expr: Compiled
    #: composite only: (row param ``code$j``, compiled component expression, effective type)
    components: tuple[tuple[str, Compiled, str], ...] = ()
    fn: Any = None  # expr.fn, for the hot loop

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", self.expr.fn)


@dataclass(frozen=True, slots=True)
class Alias:
    """A search parameter whose index rows other parameters of the same type already hold.

    - a **union** (``target`` None): its expression is the union of its ``bases``' expressions, so
      its rows are theirs (Observation ``combo-code`` = ``code`` | ``component-code``; a composite
      such as ``combo-code-value-quantity`` is, node for node, ``code-value-quantity`` and
      ``component-code-value-quantity``).  None of its rows are stored.
    - a **restriction**: its expression is ``B.where(resolve() is T)`` for its one base ``B``
      (Observation ``patient`` = ``subject`` pointing to a Patient), so its rows are ``B``'s rows
      whose target type is ``T``.  Only the rows that ``B``'s do not imply are stored (a Reference
      whose ``type`` says Patient but whose reference string does not), and its ``:identifier`` rows.

    Derived from the SearchParameter expressions, not listed: see :func:`_aliases`.
    """

    bases: tuple[str, ...]
    target: str | None = None


@dataclass(frozen=True, slots=True)
class _TypePlan:
    ctx: Any  # the resource type's element context
    params: tuple[ParamPlan, ...]
    by_key: dict[str, tuple[int, ...]]  # top-level JSON key -> params that start from it
    always: tuple[int, ...]  # params evaluated whatever keys the resource has
    aliases: dict[str, Alias] = field(default_factory=dict)
    #: the row names (``code``, ``code:modifier``, ``code$j``) of the union aliases: never stored
    unstored: frozenset[str] = frozenset()
    #: restriction alias -> (its base, the target type)
    narrowed: dict[str, tuple[str, str]] = field(default_factory=dict)


def _natural_type(ntypes: frozenset[str]) -> str | None:
    for t in sorted(ntypes):
        for base, ptype in _NATURAL:
            if is_subtype(t, base):
                return ptype
    return None


def _effective_component_type(rt: str, composite_expr: str, url: str, expr: str) -> str:
    """The component's param type, or the natural one of its nodes when the spec's
    component definition does not fit them (R4 DocumentReference ``relationship``
    has its two component definitions swapped)."""
    d = search_params_by_url().get(url)
    declared = d.type if d is not None else None
    outs = output_types(expr, rt, composite_expr)
    if declared is not None and (not outs or any(_handler(declared, t) is not None for t in outs)):
        return declared
    if declared is not None and all(t == "Extension" for t in outs):
        return declared
    return _natural_type(outs) or declared or "token"


_PLANS: dict[str, _TypePlan] = {}


def _plan(rt: str) -> _TypePlan:
    plan = _PLANS.get(rt)
    if plan is not None:
        return plan
    params: list[ParamPlan] = []
    if rt not in resource_types():
        plan = _PLANS[rt] = _TypePlan(None, (), {}, ())
        return plan
    for code, p in search_params_for(rt).items():
        if code in SKIPPED_PARAMS or p.type == "special" or not p.expression:
            continue
        bare: frozenset[str] | None = None
        if p.type == "composite":
            # a composite on the resource itself needs every component present:
            # the keys of any one of them gate it (the last, usually the value, is
            # the most selective)
            for _url, e in p.component:
                lk = fhirpath.lead_keys(e, rt)
                if lk is not None:
                    bare = lk
        c = fhirpath.compile_for_type(p.expression, rt, bare)
        if c is None:
            continue
        comps: tuple[tuple[str, Compiled, str], ...] = ()
        if p.type == "composite":
            comps = tuple(
                (f"{code}${j}", fhirpath.compile(e), _effective_component_type(rt, p.expression, url, e))
                for j, (url, e) in enumerate(p.component)
            )
        params.append(ParamPlan(code, p.type, c, comps))
    by_key: dict[str, list[int]] = {}
    always: list[int] = []
    for i, pp in enumerate(params):
        if pp.expr.first_keys is None:
            always.append(i)
        else:
            for k in pp.expr.first_keys:
                by_key.setdefault(k, []).append(i)
    aliases = _aliases(rt, params)
    by_code = {pp.code: pp for pp in params}
    unstored = frozenset(
        name
        for code, al in aliases.items() if al.target is None
        for name in (code, f"{code}:of-type", f"{code}:identifier", *(n for n, _c, _t in by_code[code].components))
    )
    narrowed = {code: (al.bases[0], al.target) for code, al in aliases.items() if al.target is not None}
    plan = _TypePlan(fhirpath.type_ctx(rt), tuple(params), {k: tuple(v) for k, v in by_key.items()}, tuple(always),
                     aliases, unstored, narrowed)
    _PLANS[rt] = plan
    return plan


def _aliases(rt: str, params: list[ParamPlan]) -> dict[str, Alias]:
    """The parameters of ``rt`` whose rows others hold (see :class:`Alias`), from their expressions.

    A union: a parameter of two or more ``|``-parts, each part the whole or a part of another
    parameter of the same type (and, for a composite, the same components) whose parts it all has.
    A restriction: a reference parameter whose one part is ``X.where(resolve() is T)`` while another
    reference parameter's one part is ``X``.
    """
    defs = search_params_for(rt)
    shape: dict[str, tuple[str, frozenset[str], tuple[tuple[str, str], ...]]] = {}
    asts: dict[str, tuple[tuple[Any, ...], ...]] = {}
    for pp in params:
        d = defs[pp.code]
        assert d.expression is not None
        asts[pp.code] = fhirpath.parts_for_type(d.expression, rt)
        comps = tuple((repr(fhirpath.parse(e)), t) for (_u, e), (_n, _c, t) in zip(d.component, pp.components,
                                                                                     strict=True))
        shape[pp.code] = (pp.type, frozenset(repr(a) for a in asts[pp.code]), comps)
    out: dict[str, Alias] = {}
    for code, (ptype, parts, comps) in shape.items():
        if len(parts) >= 2:
            bases = sorted(b for b, (bt, bparts, bcomps) in shape.items()
                           if b != code and bt == ptype and bcomps == comps and bparts < parts)
            if bases and frozenset().union(*(shape[b][1] for b in bases)) == parts:
                out[code] = Alias(tuple(bases))
        elif ptype == "reference" and len(parts) == 1:
            f = fhirpath.resolve_filter(asts[code][0])
            if f is not None:
                inner = frozenset({repr(f[0])})
                bases = sorted(b for b, (bt, bparts, _c) in shape.items() if b != code and bt == ptype
                               and bparts == inner)
                if bases:
                    out[code] = Alias((bases[0],), f[1])
    # a base is stored in full: an alias of an alias would lose rows
    return {k: a for k, a in out.items() if not any(b in out for b in a.bases)}


def aliases(resource_type: str) -> dict[str, Alias]:
    """The search parameters of a type whose rows others hold (see :class:`Alias`)."""
    return _plan(resource_type).aliases


def storable(resource_type: str, ix: ResourceIndex) -> ResourceIndex:
    """The rows of ``ix`` the store keeps: without the rows that an :class:`Alias`'s bases hold.

    ``ix`` itself is not changed (callers may still read every parameter's rows from it).
    """
    plan = _PLANS.get(resource_type) or _plan(resource_type)
    drop, narrowed = plan.unstored, plan.narrowed
    if not drop and not narrowed:
        return ix
    out = ResourceIndex(ix.strings, ix.tokens, ix.dates, ix.refs, ix.quantities, ix.numbers, ix.uris)
    if drop:
        for name in ("strings", "tokens", "dates", "refs", "quantities", "numbers", "uris"):
            rows = getattr(out, name)
            if rows and any(r[0] in drop for r in rows):
                setattr(out, name, [r for r in rows if r[0] not in drop])
    refs = out.refs
    if narrowed and any(r[0] in narrowed for r in refs):
        held = {(r[0], r[2], r[3], r[4]) for r in refs if r[1] == 0}
        kept = []
        for r in refs:
            n = narrowed.get(r[0])
            if n is None or r[1] != 0 or r[2] != n[1] or (n[0], r[2], r[3], r[4]) not in held:
                kept.append(r)
        out.refs = kept
    return out


def params_for(resource_type: str) -> tuple[ParamPlan, ...]:
    """The compiled search parameters indexed for a resource type."""
    return _plan(resource_type).params


def composite_component_types(resource_type: str, code: str) -> tuple[tuple[str, str], ...]:
    """``(row param, param type)`` of each component of a composite parameter, as indexed.

    The query side needs these to know which table holds ``code$j``; they are the
    component definitions' types, except where the spec got them wrong.
    """
    for pp in _plan(resource_type).params:
        if pp.code == code:
            return tuple((name, t) for name, _c, t in pp.components)
    return ()


# --------------------------------------------------------------------------- extraction


def _extract(resource: dict[str, Any], probes: Sink, gate: bool = True,
             only: frozenset[str] | None = None) -> ResourceIndex:
    ix = ResourceIndex()
    rt = resource.get("resourceType")
    if type(rt) is not str:
        return ix
    plan = _PLANS.get(rt) or _plan(rt)
    if not plan.params:
        return ix
    if gate:
        todo = set(plan.always)
        by_key = plan.by_key
        for k in resource:
            hit = by_key.get(k)
            if hit is not None:
                todo.update(hit)
    else:  # every parameter (the test-suite checks the key gating loses nothing)
        todo = set(range(len(plan.params)))
    params = plan.params
    if only is not None:
        todo = {i for i in todo if params[i].code in only}
    if not todo:
        return ix
    root: Item = (resource, rt, plan.ctx)
    env = new_env(root)
    focus = [root]
    for i in todo:  # small ints: a set iterates them in order
        pp = params[i]
        nodes = pp.fn(focus, env)
        if not nodes:
            continue
        if pp.components:
            _composite(ix, pp, nodes, env, probes)
            continue
        # _emit, inlined for the common case
        dispatch = _DISPATCH[pp.type]
        for node in nodes:
            h = dispatch.get(node[1], _NONE)
            if h is _NONE:
                h = _handler(pp.type, node[1])
            if h is not None:
                h(ix, pp.code, 0, node, probes)
            elif node[1] == "Extension":
                _emit(ix, pp.type, pp.code, 0, _unwrap_extension(node), probes)
    ix._dedupe()
    return ix


def _composite(ix: ResourceIndex, pp: ParamPlan, nodes: list[Item], env: Any, probes: Sink) -> None:
    """Rows of each component j for the i-th node, under ``code$j`` and ``grp = i + 1``.

    A node whose components are not all present is skipped: no composite search
    could match it.  Handlers emit no modifier rows when ``grp != 0``.
    """
    comps = pp.components
    for i, node in enumerate(nodes):
        focus = [node]
        values = [c.fn(focus, env) for _name, c, _t in comps]
        if not all(values):
            continue
        g = i + 1
        if probes is None:
            for (name, _c, ctype), cnodes in zip(comps, values, strict=True):
                _emit(ix, ctype, name, g, cnodes, None)
            continue
        parts: list[str] = []
        for (name, _c, ctype), cnodes in zip(comps, values, strict=True):
            sub: list[Probe] = []
            _emit(ix, ctype, name, g, cnodes, sub)
            first = next((v for prm, v in sub if prm == name), None)
            if first is not None:
                parts.append(first)
        if len(parts) == len(comps):
            probes.append((pp.code, "$".join(parts)))


def index_resource(resource: dict[str, Any]) -> ResourceIndex:
    """Every search index row for one resource (``_id``/``_lastUpdated`` excepted).

    Rows are de-duplicated per (param, grp, values).  Unknown resource types give
    an empty index; values that do not parse (a bad date) are skipped, never raised.
    """
    return _extract(resource, None)


def index_params(resource: dict[str, Any], codes: frozenset[str]) -> ResourceIndex:
    """The index rows of only the named search parameters (what :func:`index_resource` gives
    for them, at a fraction of the cost when a caller needs a few)."""
    return _extract(resource, None, only=codes)


def probe_values(resource: dict[str, Any]) -> list[Probe]:
    """One ``(param[:modifier], search value)`` per index row that a correct FHIR
    server must match against ``resource`` (values escaped per FHIR search rules).

    Examples: ``("gender", "male")``, ``("code", "http://loinc.org|1234-5")``,
    ``("birthdate", "eq1974-12-25")``, ``("date", "ge2013-01-01")`` for a Period
    start, ``("subject", "Patient/1")``, ``("value-quantity",
    "5.4|http://unitsofmeasure.org|mg")``, ``("code-value-quantity",
    "http://loinc.org|1234-5$5.4|http://unitsofmeasure.org|mg")``,
    ``("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|123")``.
    """
    probes: list[Probe] = []
    _extract(resource, probes)
    return list(dict.fromkeys(probes))
