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
#: token modifiers answered from the terminology service's code sets (value sets, hierarchies)
CODE_SET_MODIFIERS = {"in", "not-in", "below", "above"}
SUMMARY = {"true", "false", "text", "data", "count"}
TOTAL = {"none", "estimate", "accurate"}
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]+$")
_RESOLVE_IS = re.compile(r"resolve\(\)\s+is\s+([A-Z][A-Za-z]+)")
_PATH_HEAD = re.compile(r"^\(?([A-Z][A-Za-z]+)\.([a-z][A-Za-z0-9]*)")


def split_escaped(v: str, sep: str) -> list[str]:
    """Split ``v`` on ``sep`` where it is not escaped with a backslash.

    The parts keep their escapes (``\\,`` ``\\|`` ``\\$`` ``\\\\``) so that they can be split
    again on another separator; :func:`unescape` each part once it is a final value.
    """
    parts: list[str] = []
    cur: list[str] = []
    i, n = 0, len(v)
    while i < n:
        ch = v[i]
        if ch == "\\" and i + 1 < n:
            cur.append(v[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def split_values(value: str, *, drop_empty: bool = False) -> list[str]:
    """Split ``a,b\\,c`` into ``['a', 'b\\,c']``: a comma is OR, ``\\,`` a literal comma.

    The values keep their escapes: the compiler splits them further (``|``, ``$``)
    as the parameter type needs, then unescapes each part (:func:`unescape`).
    ``drop_empty`` leaves out empty alternatives (``a,`` is ``a``, not "a or anything").
    """
    parts = split_escaped(value, ",")
    return [p for p in parts if p != ""] if drop_empty else parts


def unescape(v: str) -> str:
    """``\\,`` ``\\|`` ``\\$`` ``\\\\`` → ``,`` ``|`` ``$`` ``\\`` (any other backslash is kept)."""
    if "\\" not in v:
        return v
    out: list[str] = []
    i, n = 0, len(v)
    while i < n:
        ch = v[i]
        if ch == "\\" and i + 1 < n and v[i + 1] in ",|$\\":
            out.append(v[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def reference_targets(resource_type: str, p: defs.SearchParamDef) -> tuple[str, ...]:
    """The types a reference parameter can point to *from this resource type*.

    Shared definitions list the union over every base (``clinical-patient`` targets
    Patient and Group); the type's own part of the expression often narrows it
    (``Observation.subject.where(resolve() is Patient)``), else the element's
    declared targets do.  Falls back to the definition's targets.
    """
    declared = tuple(t for t in p.target if t != "Resource")
    if not p.expression:
        return declared
    found: set[str] = set()
    td = defs.types().get(resource_type)
    for part in p.expression.split("|"):
        part = part.strip()
        m = _PATH_HEAD.match(part)
        if m is None or m.group(1) != resource_type:
            continue
        r = _RESOLVE_IS.search(part)
        if r is not None:
            found.add(r.group(1))
            continue
        el = td.elements.get(m.group(2)) if td is not None else None
        if el is None or not el.targets or "Resource" in el.targets:
            return declared
        found.update(el.targets)
    if not found:
        return declared
    narrowed = tuple(t for t in declared if t in found) if declared else tuple(sorted(found))
    return narrowed or declared


@dataclass(slots=True)
class Criterion:
    """One search parameter with its ORed values (still escaped: see :func:`split_values`).

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
    #: this server's FHIR base (``https://host/fhir``), when the caller knows it: a reference
    #: search on an absolute URL under it is a local reference (overrides the store's setting)
    base_url: str | None = None


class Parser:
    """Parses search parameters for one resource type (or the whole system)."""

    def __init__(self, *, default_count: int = 50, max_count: int = 1000, lenient: bool = False,
                 code_sets: bool = False) -> None:
        self.default_count = default_count
        self.max_count = max_count
        self.lenient = lenient
        #: whether the node has code sets for :in, :not-in, :below and :above on tokens
        self.code_sets = code_sets

    def parse(self, resource_type: str | None, params: list[tuple[str, str]]) -> SearchRequest:
        req = SearchRequest(resource_type=resource_type, count=self.default_count)
        # _type decides which parameters a system-level search knows, wherever it stands
        rest: list[tuple[str, str]] = []
        for name, value in params:
            if name.partition(":")[0] == "_type":
                self._type(req, name, value)
            else:
                rest.append((name, value))
        for name, value in rest:
            if name in RESULT_PARAMS or name.split(":", 1)[0] in ("_include", "_revinclude"):
                self._result_param(req, name, value)
                continue
            if not split_values(value, drop_empty=True):
                self._unknown(req, f"Search parameter {name!r} has no value", name, code="invalid")
                continue
            crit = self._criterion(resource_type, name, value, req)
            if crit is not None:
                req.criteria.append(crit)
        return req

    # -- errors ---------------------------------------------------------------------------
    def _unknown(self, req: SearchRequest, message: str, name: str, code: str = "not-supported") -> None:
        if self.lenient:
            req.warnings.append(Issue("warning", code, message + " (ignored)", name, "PHIP-2001"))
            return
        raise FhirError(400, message, code=code, expression=name, msg_id="PHIP-2001")

    def _type(self, req: SearchRequest, name: str, value: str) -> None:
        if req.resource_type is not None:
            self._unknown(req, "_type is only allowed in a system-level search", name)
            return
        if name != "_type":
            raise bad_request(f"_type takes no modifier ({name!r})", expression=name)
        types = [t.strip() for t in value.split(",") if t.strip()]
        bad = [t for t in types if t not in defs.resource_types()]
        if bad:
            raise bad_request(f"_type: unknown resource type(s) {', '.join(bad)}", expression="_type")
        if not types:
            raise bad_request("_type needs at least one resource type", expression="_type")
        req.types = sorted(set(types)) if req.types is None else sorted(set(req.types) & set(types))

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
                if code in ("_id", "_lastUpdated"):
                    known = True
                elif req.resource_type is not None:
                    known = code in defs.search_params_for(req.resource_type)
                else:  # a system-level search sorts on what every _type has
                    known = _common_param(req.types, code) is not None
                if not known:
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
        if code in ("_id", "_lastUpdated", "_text", "_content"):
            if chain_part is not None:
                raise bad_request(f"{code} cannot be chained", expression=name)
            allowed = {"_id": ("missing", "not"), "_lastUpdated": ("missing",)}.get(code, ())
            if modifier_s is not None and modifier_s not in allowed:
                raise bad_request(f"Modifier :{modifier_s} is not allowed on {code}", expression=name)
            if modifier_s == "missing" and value not in ("true", "false"):
                raise bad_request(f":missing takes true or false, not {value!r}", expression=name)
            return Criterion(code, code, split_values(value, drop_empty=True), modifier_s)
        if code in ("_list", "_query", "_filter"):
            self._unknown(req, f"Search parameter {code} is not supported by this server", name)
            return None
        if resource_type is None:
            p = _common_param(req.types, code) if req.types else defs.search_params_for("Resource").get(code)
        else:
            p = defs.search_params_for(resource_type).get(code)
        if p is None:
            where = resource_type or "a system-level search"
            self._unknown(req, f"Unknown search parameter {code!r} for {where}", name)
            return None
        if p.type == "special" and p.url == "http://hl7.org/fhir/SearchParameter/Location-near":
            if modifier_s is not None:
                raise bad_request("near takes no modifier", expression=name)
            return Criterion(code, "near", split_values(value, drop_empty=True), None, p)
        if p.type == "special" or (p.expression is None and p.type != "composite"):
            self._unknown(req, f"Search parameter {code!r} ({p.type}) is not supported by this server", name)
            return None
        crit = Criterion(code, p.type, split_values(value, drop_empty=True), None, p)
        if modifier_s is not None:
            if p.type == "reference" and modifier_s not in MODIFIERS["reference"]:
                if modifier_s not in defs.resource_types():
                    raise bad_request(
                        f"Unknown modifier :{modifier_s} on reference parameter {code!r}", expression=name
                    )
                if p.target and "Resource" not in p.target and modifier_s not in p.target:
                    raise bad_request(
                        f"{code!r} cannot refer to a {modifier_s} (it targets {', '.join(p.target)})",
                        expression=name,
                    )
                crit.chain_type = modifier_s
            elif modifier_s not in MODIFIERS.get(p.type, set()):
                raise bad_request(
                    f"Modifier :{modifier_s} is not allowed on {p.type} parameter {code!r}", expression=name
                )
            elif modifier_s in CODE_SET_MODIFIERS and p.type == "token" and not self.code_sets:
                self._unknown(req, f"Modifier :{modifier_s} needs the terminology service", name)
                return None
            elif modifier_s in CODE_SET_MODIFIERS and p.type == "token":
                for v in crit.values:
                    parts = split_escaped(v, "|")
                    if modifier_s in ("below", "above") and (len(parts) != 2 or not all(map(unescape, parts))):
                        raise bad_request(f":{modifier_s} on {code!r} takes system|code (a code of a code system "
                                          f"with a hierarchy), not {unescape(v)!r}", expression=name)
                    if modifier_s in ("in", "not-in") and not unescape(v):
                        raise bad_request(f":{modifier_s} on {code!r} takes the URL of a ValueSet", expression=name)
                crit.modifier = modifier_s
            else:
                crit.modifier = modifier_s
        if crit.modifier == "missing" and value not in ("true", "false"):
            raise bad_request(f":missing takes true or false, not {value!r}", expression=name)
        if chain_part is not None:
            if p.type != "reference":
                raise bad_request(f"Chaining needs a reference parameter; {code!r} is {p.type}", expression=name)
            if crit.modifier is not None:
                raise bad_request(f"Modifier :{crit.modifier} cannot be used in a chain", expression=name)
            if crit.chain_type:
                targets: list[str] = [crit.chain_type]
            elif resource_type is not None:
                targets = list(reference_targets(resource_type, p))
            else:
                targets = [t for t in p.target if t != "Resource"]
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
    """The parameter ``code`` when every type of a ``_type`` search has it, with one type."""
    if not types:
        return None
    found = [defs.search_params_for(t).get(code) for t in types]
    first = found[0]
    if first is None or any(f is None or f.type != first.type for f in found):
        return None
    return first


def parse_prefix(value: str) -> tuple[str, str]:
    """Split ``ge2020`` into ``('ge', '2020')``; no prefix means ``eq``."""
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-."):
        return value[:2], value[2:]
    return "eq", value
