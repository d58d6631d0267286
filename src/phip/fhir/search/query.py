"""Parse FHIR search parameters into a typed request.

Turns ``[(name, value), …]`` from a query string or a ``_search`` form into a
:class:`SearchRequest`: criteria (ANDed; each criterion's values ORed), the result
parameters (``_count``, ``_sort``, ``_include``…) and the paging cursor.  Every
parameter is looked up in the spec's SearchParameter table for the type; an unknown
parameter or modifier is a 400 naming it, unless the client asked for
``Prefer: handling=lenient`` (then it is ignored and reported as a warning).
https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from phip.fhir import definitions as defs
from phip.fhir.errors import FhirError, Issue, bad_request

RESULT_PARAMS = {
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_cursor",
    "_format",
    "_pretty",
    "_contained",
    "_containedType",
}
SPECIAL = {"_id", "_lastUpdated", "_has", "_type", "_text", "_content", "_list", "_query", "_filter"}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "missing", "in", "not-in", "below", "above"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
    "special": {"missing"},
}
UNSUPPORTED_MODIFIERS = {"in", "not-in", "below", "above"}  # token modifiers needing terminology
SUMMARY = {"true", "false", "text", "data", "count"}
TOTAL = {"none", "estimate", "accurate"}
_SPLIT = re.compile(r"(?<!\\),")
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]+$")


def split_values(value: str) -> list[str]:
    """Split ``a,b\\,c`` into ``['a', 'b,c']`` (a comma is OR; ``\\,`` is a comma)."""
    return [unescape(v) for v in _SPLIT.split(value)]


def unescape(v: str) -> str:
    return v.replace("\\,", ",").replace("\\$", "$").replace("\\|", "|").replace("\\\\", "\\")


def split_escaped(v: str, sep: str) -> list[str]:
    """Split on ``sep`` unless it is escaped with a backslash."""
    parts = re.split(r"(?<!\\)" + re.escape(sep), v)
    return [p.replace("\\" + sep, sep) for p in parts]


@dataclass(slots=True)
class Criterion:
    """One search parameter with its ORed values.

    ``kind`` is the parameter type (``string``, ``token``…) or a special name
    (``_id``, ``_lastUpdated``, ``_type``, ``_has``, ``_text``, ``_content``).
    A chained criterion (``subject:Patient.name=x``) has ``chain`` set to the inner
    criterion on ``chain_type``; ``_has`` has ``has_type``/``has_param`` and ``chain``.
    """

    code: str
    kind: str
    values: list[str]
    modifier: str | None = None
    param: defs.SearchParamDef | None = None
    chain_type: str | None = None
    chain: Criterion | None = None
    has_type: str | None = None
    has_param: defs.SearchParamDef | None = None


@dataclass(slots=True)
class Include:
    source_type: str
    param: defs.SearchParamDef | None  # None for "*"
    code: str
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(slots=True)
class SearchRequest:
    resource_type: str | None  # None: system-level search
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (code, descending)
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str | None = None
    cursor: str | None = None
    warnings: list[Issue] = field(default_factory=list)
    types: list[str] | None = None  # system search: _type


class Parser:
    """Parses search parameters for one resource type (or the whole system)."""

    def __init__(self, *, default_count: int = 50, max_count: int = 1000, lenient: bool = False) -> None:
        self.default_count = default_count
        self.max_count = max_count
        self.lenient = lenient

    def parse(self, resource_type: str | None, params: list[tuple[str, str]]) -> SearchRequest:
        req = SearchRequest(resource_type=resource_type, count=self.default_count)
        for name, value in params:
            if name in RESULT_PARAMS or name.split(":", 1)[0] in ("_include", "_revinclude"):
                self._result_param(req, name, value)
                continue
            crit = self._criterion(resource_type, name, value, req)
            if crit is not None:
                req.criteria.append(crit)
        return req

    # -- errors ---------------------------------------------------------------------------
    def _unknown(self, req: SearchRequest, message: str, name: str) -> None:
        if self.lenient:
            req.warnings.append(Issue("warning", "not-supported", message + " (ignored)", name, "PHIP-2001"))
            return
        raise FhirError(400, message, code="not-supported", expression=name, msg_id="PHIP-2001")

    # -- result parameters ------------------------------------------------------------------
    def _result_param(self, req: SearchRequest, name: str, value: str) -> None:
        base = name.split(":", 1)[0]
        if base == "_count":
            try:
                n = int(value)
            except ValueError:
                raise bad_request(f"_count must be a whole number, not {value!r}", expression="_count") from None
            if n < 0:
                raise bad_request("_count must not be negative", expression="_count")
            if n > self.max_count:
                raise bad_request(
                    f"_count {n} is over this server's maximum of {self.max_count}",
                    expression="_count",
                    msg_id="PHIP-2002",
                )
            req.count = n
        elif base == "_sort":
            for key in value.split(","):
                key = key.strip()
                if not key:
                    continue
                desc = key.startswith("-")
                code = key.lstrip("-")
                if code not in ("_id", "_lastUpdated") and (
                    req.resource_type is None or code not in defs.search_params_for(req.resource_type)
                ):
                    self._unknown(req, f"Unknown sort parameter {code!r}", "_sort")
                    continue
                req.sort.append((code, desc))
        elif base in ("_include", "_revinclude"):
            req.includes.extend(self._include(req, name, value))
        elif base == "_summary":
            if value not in SUMMARY:
                raise bad_request(f"_summary must be one of {sorted(SUMMARY)}", expression="_summary")
            req.summary = None if value == "false" else value
        elif base == "_elements":
            req.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base == "_total":
            if value not in TOTAL:
                raise bad_request(f"_total must be one of {sorted(TOTAL)}", expression="_total")
            req.total = value
        elif base == "_cursor":
            req.cursor = value
        # _format, _pretty, _contained: accepted, no effect on a JSON-only server

    def _include(self, req: SearchRequest, name: str, value: str) -> list[Include]:
        reverse = name.startswith("_revinclude")
        iterate = name.endswith(":iterate") or name.endswith(":recurse")
        out: list[Include] = []
        for v in value.split(","):
            v = v.strip()
            if v == "*":
                out.append(Include(req.resource_type or "*", None, "*", None, iterate, reverse))
                continue
            parts = v.split(":")
            if len(parts) not in (2, 3) or not _TYPE_RE.match(parts[0]):
                raise bad_request(
                    f"{name} value {v!r} must be SourceType:param[:TargetType]", expression=name
                )
            src, code = parts[0], parts[1]
            target = parts[2] if len(parts) == 3 else None
            if src not in defs.resource_types():
                raise bad_request(f"{name}: unknown resource type {src!r}", expression=name)
            p = defs.search_params_for(src).get(code)
            if p is None or p.type != "reference":
                self._unknown(req, f"{name}: {src} has no reference parameter {code!r}", name)
                continue
            if target is not None and target not in defs.resource_types():
                raise bad_request(f"{name}: unknown target type {target!r}", expression=name)
            out.append(Include(src, p, code, target, iterate, reverse))
        return out

    # -- criteria ------------------------------------------------------------------------------
    def _criterion(
        self, resource_type: str | None, name: str, value: str, req: SearchRequest
    ) -> Criterion | None:
        if name.startswith("_has:"):
            return self._has(resource_type, name, value, req)
        chain_part: str | None = None
        head = name
        if "." in name:
            head, chain_part = name.split(".", 1)
        code, _, modifier = head.partition(":")
        modifier_s: str | None = modifier or None
        if code == "_type":
            if resource_type is not None:
                self._unknown(req, "_type is only allowed in a system-level search", name)
                return None
            types = [t.strip() for t in value.split(",") if t.strip()]
            bad = [t for t in types if t not in defs.resource_types()]
            if bad:
                raise bad_request(f"_type: unknown resource type(s) {', '.join(bad)}", expression="_type")
            req.types = types
            return None
        if code in ("_id", "_lastUpdated", "_text", "_content"):
            if modifier_s not in (None, "missing", "not") or (modifier_s == "not" and code != "_id"):
                self._unknown(req, f"Modifier :{modifier_s} is not supported on {code}", name)
                return None
            return Criterion(code, code, split_values(value), modifier_s)
        if code in ("_list", "_query", "_filter"):
            self._unknown(req, f"Search parameter {code} is not supported by this server", name)
            return None
        if resource_type is None:
            p = defs.search_params_for("Resource").get(code) or _common_param(req.types, code)
        else:
            p = defs.search_params_for(resource_type).get(code)
        if p is None:
            where = resource_type or "a system-level search"
            self._unknown(req, f"Unknown search parameter {code!r} for {where}", name)
            return None
        if p.type == "special" or (p.expression is None and p.type != "composite"):
            self._unknown(req, f"Search parameter {code!r} ({p.type}) is not supported by this server", name)
            return None
        crit = Criterion(code, p.type, split_values(value), None, p)
        if modifier_s is not None:
            if p.type == "reference" and modifier_s not in MODIFIERS["reference"]:
                if modifier_s not in defs.resource_types():
                    raise bad_request(
                        f"Unknown modifier :{modifier_s} on reference parameter {code!r}", expression=name
                    )
                crit.chain_type = modifier_s
            elif modifier_s not in MODIFIERS.get(p.type, set()):
                raise bad_request(
                    f"Modifier :{modifier_s} is not allowed on {p.type} parameter {code!r}", expression=name
                )
            elif modifier_s in UNSUPPORTED_MODIFIERS and p.type == "token":
                self._unknown(req, f"Modifier :{modifier_s} needs the terminology service", name)
                return None
            else:
                crit.modifier = modifier_s
        if crit.modifier == "missing" and value not in ("true", "false"):
            raise bad_request(f":missing takes true or false, not {value!r}", expression=name)
        if chain_part is not None:
            if p.type != "reference":
                raise bad_request(f"Chaining needs a reference parameter; {code!r} is {p.type}", expression=name)
            targets = [crit.chain_type] if crit.chain_type else [t for t in p.target if t != "Resource"]
            if len(targets) != 1:
                raise bad_request(
                    f"Chained parameter {name!r} must name the target type ({code}:Type.{chain_part})",
                    expression=name,
                )
            ttype = targets[0]
            inner = self._criterion(ttype, chain_part, value, req)
            if inner is None:
                return None
            if inner.chain is not None:
                self._unknown(req, "Only one level of chaining is supported", name)
                return None
            crit.chain_type = ttype
            crit.chain = inner
            crit.values = []
        return crit

    def _has(self, resource_type: str | None, name: str, value: str, req: SearchRequest) -> Criterion | None:
        parts = name.split(":", 3)
        if len(parts) != 4 or resource_type is None:
            raise bad_request(f"_has must be _has:Type:reference:param, not {name!r}", expression=name)
        _, htype, ref, rest = parts
        if htype not in defs.resource_types():
            raise bad_request(f"_has: unknown resource type {htype!r}", expression=name)
        rp = defs.search_params_for(htype).get(ref)
        if rp is None or rp.type != "reference":
            raise bad_request(f"_has: {htype} has no reference parameter {ref!r}", expression=name)
        if rest.startswith("_has:"):
            self._unknown(req, "Only one level of _has is supported", name)
            return None
        inner = self._criterion(htype, rest, value, req)
        if inner is None:
            return None
        return Criterion("_has", "_has", [], None, None, None, inner, htype, rp)


def _common_param(types: list[str] | None, code: str) -> defs.SearchParamDef | None:
    if not types:
        return None
    found = [defs.search_params_for(t).get(code) for t in types]
    if all(f is not None for f in found):
        return found[0]
    return None


def parse_prefix(value: str) -> tuple[str, str]:
    """Split ``ge2020`` into ``('ge', '2020')``; no prefix means ``eq``."""
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-."):
        return value[:2], value[2:]
    return "eq", value
