"""The per-record checks: what one resource says about its own quality.

:class:`Checker` compiles :class:`~phip.quality.rules.Rules` once and then, for each resource,
returns its :class:`Facts` — the findings a resource has on its own (completeness, conformance,
most of logical consistency, timeliness) and what the cross-record checks need (institution,
subject, event time, birth/death/sex of a Patient, the uniqueness key).  Pure Python over the
JSON, no database: the engine runs it per write and per import batch alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from phip.cn import gb11643
from phip.quality.rules import Rules, date_order_id, required_id

DAY_US = 86_400_000_000
_CST = timezone(timedelta(hours=8))
HOUR_US = 3_600_000_000


@runtime_checkable
class CodeValidator(Protocol):
    """The narrow part of the terminology service the quality engine uses
    (``node.ext["terminology"]``).  The answer may be a bool, a mapping or object with a
    ``result``, or a FHIR ``Parameters``; None (or an exception) means "cannot tell"."""

    def validate_code(self, system: str, code: str, valueset_url: str | None = None) -> Any: ...


@dataclass(slots=True)
class Found:
    rule: str
    path: str
    message: str


@dataclass(slots=True)
class Facts:
    institution: str | None = None
    via: str | None = None  # "Encounter/x" or "Patient/x" whose institution this one inherits
    subject: str | None = None
    received: int = 0  # microseconds since the epoch, UTC
    event: int | None = None
    gender: str | None = None
    birth: int | None = None
    death: int | None = None
    xrule: str | None = None  # a sex/age-for-code rule to check against the subject
    ukey: str | None = None
    uid: str | None = None  # must match between duplicates when both have it
    #: a Patient's (ID number, name, phone, current address) for the population registry comparison;
    #: never stored as such (the engine keeps keyed hashes of them)
    ref: tuple[str | None, str | None, str | None, str | None] | None = None
    findings: list[Found] = field(default_factory=list)
    #: with ``check(codes=False)``: where in ``findings`` the value-set checks' findings belong
    codes_at: int | None = None


_TIMES: dict[str, int | None] = {}


def parse_time(text: Any) -> int | None:
    """A FHIR date/dateTime/instant as microseconds since the epoch (partial dates: their start;
    dates without a zone: China time).  Cached: the same times recur across a batch."""
    if not isinstance(text, str) or len(text) < 4:
        return None
    hit = _TIMES.get(text, -1)
    if hit != -1:
        return hit
    out = _parse_time(text)
    if len(_TIMES) >= 200_000:
        _TIMES.clear()
    _TIMES[text] = out
    return out


def _parse_time(text: str) -> int | None:
    try:
        if len(text) == 4:
            dt = datetime(int(text), 1, 1, tzinfo=_CST)
        elif len(text) == 7:
            dt = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=_CST)
        elif len(text) == 10:
            dt = datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), tzinfo=_CST)
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=_CST)
    except ValueError:
        return None
    return int(dt.timestamp() * 1_000_000)




_DAYS: dict[int, int] = {}


def day_of(us: int, offset_hours: float = 8) -> int:
    """The calendar day (``YYYYMMDD`` as an int) of an instant at the node's UTC offset."""
    n = int((us + offset_hours * HOUR_US) // DAY_US)
    day = _DAYS.get(n)
    if day is None:
        d = datetime.fromtimestamp(n * 86400, UTC)
        day = d.year * 10000 + d.month * 100 + d.day
        if len(_DAYS) < 100_000:
            _DAYS[n] = day
    return day


_LOCAL_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def _name_text(res: dict[str, Any]) -> str | None:
    """The official (else first) name as written, without spaces."""
    names = [n for n in res.get("name") or () if isinstance(n, dict)]
    if not names:
        return None
    n = next((x for x in names if x.get("use") == "official"), names[0])
    text = n.get("text")
    if not isinstance(text, str) or not text.strip():
        given = n.get("given") or []
        text = (n.get("family") or "") + "".join(g for g in given if isinstance(g, str))
    text = "".join(str(text).split())
    return text or None


def _phone(res: dict[str, Any]) -> str | None:
    for t in res.get("telecom") or ():
        if isinstance(t, dict) and t.get("system") == "phone" and isinstance(t.get("value"), str):
            v = "".join(ch for ch in t["value"] if ch.isdigit())
            if v:
                return v
    return None


def _home_address(res: dict[str, Any]) -> str | None:
    """The current address (not ``old``, no ended period; ``home`` first): its lines (the part below
    the district, written the same way by everyone), else its text."""
    cur = [a for a in res.get("address") or () if isinstance(a, dict) and a.get("use") != "old"
           and not (isinstance(a.get("period"), dict) and a["period"].get("end"))]
    if not cur:
        return None
    a = next((x for x in cur if x.get("use") == "home"), cur[0])
    text = "".join(x for x in a.get("line") or () if isinstance(x, str)) or (
        a.get("text") if isinstance(a.get("text"), str) else "")
    text = "".join(str(text).split())
    return text or None


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def walk(node: Any, parts: tuple[str, ...]) -> list[Any]:
    """The values at a dotted path, lists flattened (``category.coding.code``)."""
    n = len(parts)
    if n == 1:  # the common case: one element of the resource
        v = node.get(parts[0]) if isinstance(node, dict) else None
        if v is None or v == "" or v == {}:
            return []
        if isinstance(v, list):
            return [x for x in v if x not in ("", [], {})]
        return [v]
    if n == 2:  # the next most common: an element of an element (``code.coding``, ``period.start``)
        v = node.get(parts[0]) if isinstance(node, dict) else None
        if v is None:
            return []
        last = parts[1]
        out: list[Any] = []
        for c in v if isinstance(v, list) else (v,):
            if isinstance(c, dict):
                x = c.get(last)
                if x is None or x == "" or x == {} or x == []:
                    continue
                if isinstance(x, list):
                    out.extend(y for y in x if y not in ("", [], {}))
                else:
                    out.append(x)
        return out
    cur = [node]
    for p in parts:
        nxt: list[Any] = []
        for c in cur:
            if isinstance(c, dict):
                v = c.get(p)
                if v is None:
                    continue
                if isinstance(v, list):
                    nxt.extend(v)
                else:
                    nxt.append(v)
        if not nxt:
            return []
        cur = nxt
    return [v for v in cur if v not in ("", [], {})]


def _first(node: Any, parts: tuple[str, ...]) -> Any:
    if len(parts) == 1:  # one element: its value, or a list's first
        v = node.get(parts[0]) if isinstance(node, dict) else None
        if not isinstance(v, list):
            return None if v is None or v == "" or v == {} else v
    vals = walk(node, parts)
    return vals[0] if vals else None


def _extension(res: dict[str, Any], url: str) -> list[Any]:
    return [e for e in res.get("extension") or () if isinstance(e, dict) and e.get("url") == url]


def _verdict(answer: Any) -> bool | None:
    if answer is None or isinstance(answer, bool):
        return answer
    if isinstance(answer, dict):
        if "result" in answer:
            return bool(answer["result"])
        for p in answer.get("parameter") or ():
            if isinstance(p, dict) and p.get("name") == "result":
                return bool(p.get("valueBoolean"))
        return None
    r = getattr(answer, "result", None)
    return bool(r) if r is not None else None


@lru_cache(maxsize=4096)
def _is_traditional(text: str) -> bool:
    from phip.quality._opencc import t2s

    return t2s(text) != text


class Checker:
    """Rules compiled for fast per-resource evaluation."""

    def __init__(self, rules: Rules, terminology: CodeValidator | None = None) -> None:
        self.rules = rules
        f = rules.f
        self.offset = f.timezone_offset_hours
        self.terminology = terminology
        self._code_cache: dict[tuple[str, str, str | None], bool] = {}
        self.id_system = f.identifiers.id_number_system
        self.org_re = re.compile(f.identifiers.org_system_pattern)
        #: per type, each path naming the institution, with its reference's path
        self.direct = {t: [(p, (*_split(p), "reference")) for p in ps] for t, ps in f.institution.direct.items()}
        self.via = list(f.institution.via)
        self.required: dict[str, list[tuple[str, Any, tuple[str, ...], tuple[str, ...] | None]]] = {}
        for r in f.completeness:
            self.required.setdefault(r.resource, []).append(
                (required_id(r), r, _split(r.path), _split(r.when.path) if r.when else None))
        c = f.conformance
        self.id_number_types = {x.resource for x in c.id_number}
        self.phone_types = set(c.phone.resources)
        self.phone_res = [re.compile(p) for p in c.phone.patterns]
        self.placeholder_types = set(c.placeholder_name.resources)
        self.placeholder_re = re.compile(c.placeholder_name.pattern)
        self.traditional_types = set(c.traditional_name.resources)
        self.bindings: dict[str, list[Any]] = {}
        for b in c.bindings:
            self.bindings.setdefault(b.resource, []).append((b, _split(b.path)))
        self.fallback = {s: (set(fb.codes) if fb.codes else None, re.compile(fb.pattern) if fb.pattern else None)
                         for s, fb in c.fallback_codes.items()}
        k = f.consistency
        self.id_sex_types = set(k.id_sex.resources)
        self.id_birth_types = set(k.id_birthdate.resources)
        self.registry = k.registry
        self.date_order: dict[str, list[Any]] = {}
        for d in k.date_order:
            self.date_order.setdefault(d.resource, []).append(
                (date_order_id(d), d, _split(d.earlier), _split(d.later)))
        self.life_events = {t: [_split(p) for p in ps] for t, ps in k.event_in_life.event.items()}
        self.life_slack = int(k.event_in_life.slack_days * DAY_US)
        self.sex_rules: dict[str, list[Any]] = {}
        for s in k.sex_for_code:
            self.sex_rules.setdefault(s.resource, []).append((f"consistency.{s.resource}.{s.id}", s, _split(s.path)))
        self.sex_rule_by_id = {rid: s for rs in self.sex_rules.values() for rid, s, _p in rs}
        self.vitals = {v.code: v for v in k.vital_ranges}
        t = f.timeliness
        self.t_hours = t.hours
        self.t_default = t.default_hours
        self.t_class_a = t.class_a_hours
        self.class_a = tuple(t.class_a_codes.prefixes)
        self.t_event = {rt: [_split(p) for p in ps] for rt, ps in t.event.items()}
        self.unique = {rt: ([_split(p) for p in u.keys], u.compatible) for rt, u in f.uniqueness.items()}

    # -- terminology -----------------------------------------------------------------------------------
    def code_ok(self, system: str, code: str, valueset: str | None) -> bool:
        key = (system, code, valueset)
        hit = self._code_cache.get(key)
        if hit is not None:
            return hit
        verdict: bool | None = None
        term = self.terminology
        if term is not None:
            try:
                known = getattr(term, "is_known_system", None)
                if known is None or known(system):
                    has_vs = getattr(term, "valueset", None)
                    vs = valueset if valueset and has_vs is not None and has_vs(valueset) is not None else None
                    verdict = _verdict(term.validate_code(system, code, vs))
            except Exception:  # an unknown system or value set: fall back to the shipped tables
                verdict = None
        if verdict is None:
            codes, pattern = self.fallback.get(system, (None, None))
            if codes is not None:
                verdict = code in codes
            elif pattern is not None:
                verdict = bool(pattern.match(code))
            else:
                verdict = True  # nothing to judge against: not a finding
        if len(self._code_cache) < 200_000:
            self._code_cache[key] = verdict
        return verdict

    # -- institution -------------------------------------------------------------------------------------
    def institution(self, rtype: str, rid: str, res: dict[str, Any]) -> tuple[str | None, str | None]:
        for p, parts in self.direct.get(rtype, ()):
            if p == "$self":
                return rid, None
            for v in walk(res, parts):
                if isinstance(v, str) and v.startswith("Organization/"):
                    return v[13:], None
        src = (res.get("meta") or {}).get("source")
        if isinstance(src, str):
            if src.startswith("Organization/"):
                return src[13:], None
            m = self.org_re.match(src)
            if m:
                return m.group(1), None
        for ident in res.get("identifier") or () if isinstance(res.get("identifier"), list) else (
                [res["identifier"]] if isinstance(res.get("identifier"), dict) else ()):
            s = ident.get("system") if isinstance(ident, dict) else None
            if isinstance(s, str):
                m = self.org_re.match(s)
                if m:
                    return m.group(1), None
        for name in self.via:
            ref = res.get(name)
            r = ref.get("reference") if isinstance(ref, dict) else None
            # only a local Type/id: an absolute URL names a record on another server
            if isinstance(r, str) and _LOCAL_REF.match(r):
                return None, r
        return None, None

    # -- the checks ------------------------------------------------------------------------------------------
    def check(self, rtype: str, rid: str, res: dict[str, Any], received: int, *, codes: bool = True,
              timely: bool = True) -> Facts:
        """The facts and single-record findings of one resource.  ``codes=False`` leaves out the
        value-set checks (which need the terminology service): :meth:`check_codes` adds them.
        ``timely=False``: ``received`` is not when the source uploaded it (a file loaded without
        its sender's upload time), so timeliness is not judged."""
        fx = Facts(received=received)
        fx.institution, fx.via = self.institution(rtype, rid, res)
        out = fx.findings
        subj = res.get("subject") or res.get("patient") or res.get("beneficiary") or (
            res.get("practitioner") if rtype == "PractitionerRole" else None)
        if isinstance(subj, dict) and isinstance(subj.get("reference"), str):
            fx.subject = subj["reference"]
        elif rtype == "Patient":
            fx.subject = f"Patient/{rid}"
        idcheck = None
        if rtype in self.id_number_types or rtype == "Patient":
            idcheck = self._id_number(rtype, res, out)
        if rtype == "Patient":
            self._patient(res, fx, idcheck, received)
        for rule_id, r, parts, when_parts in self.required.get(rtype, ()):
            if len(parts) == 1 and r.when is None and r.system is None:  # the common case, quickly
                v = res.get(parts[0])
                if v is not None and v != "" and v != [] and v != {}:
                    continue
            if r.when is not None and when_parts is not None:
                vals = walk(res, when_parts)
                if r.when.in_ is not None and not any(v in r.when.in_ for v in vals):
                    continue
                if r.when.not_in is not None and any(v in r.when.not_in for v in vals):
                    continue
                if r.when.exists is not None and bool(vals) != r.when.exists:
                    continue
            vals = walk(res, parts)
            if r.system is not None:
                vals = [v for v in vals if isinstance(v, dict) and v.get("system") == r.system and v.get("value")]
            if vals:
                continue
            if r.unless_age_days_below is not None and fx.birth is not None and \
                    received - fx.birth < r.unless_age_days_below * DAY_US:
                continue
            out.append(Found(rule_id, f"{rtype}.{r.path}", f"{r.title}缺失 ({rtype}.{r.path})"))
        if rtype in self.phone_types:
            for tel in res.get("telecom") or ():
                if isinstance(tel, dict) and tel.get("system") == "phone" and isinstance(tel.get("value"), str):
                    v = tel["value"].replace(" ", "")
                    if not any(p.match(v) for p in self.phone_res):
                        out.append(Found(f"conformance.{rtype}.phone", f"{rtype}.telecom",
                                         f"电话号码 {tel['value']!r} 格式错误"))
                        break
        if rtype in self.placeholder_types or rtype in self.traditional_types:
            texts = [n.get("text") or (n.get("family", "") + "".join(n.get("given") or ()))
                     for n in res.get("name") or () if isinstance(n, dict)]
            texts = [t for t in texts if t]
            if rtype in self.placeholder_types and any(self.placeholder_re.search(t) for t in texts):
                out.append(Found(f"conformance.{rtype}.placeholder-name", f"{rtype}.name",
                                 f"姓名 {texts[0]!r} 为占位名，应登记本人姓名"))
            if rtype in self.traditional_types and any(_is_traditional(t) for t in texts):
                out.append(Found(f"conformance.{rtype}.traditional-name", f"{rtype}.name",
                                 f"姓名 {texts[0]!r} 使用繁体字"))
        if codes:
            self.check_codes(rtype, res, out)
        else:
            fx.codes_at = len(out)
        for rule_id, d, ep, lp in self.date_order.get(rtype, ()):
            a, z = parse_time(_first(res, ep)), parse_time(_first(res, lp))
            if a is not None and z is not None and a > z + d.slack_days * DAY_US + (DAY_US - 1 if len(
                    str(_first(res, lp))) == 10 else 0):
                out.append(Found(rule_id, f"{rtype}.{d.later}", f"{d.title}: {_first(res, ep)} > {_first(res, lp)}"))
        if rtype in self.life_events:
            for parts in self.life_events[rtype]:
                ev = parse_time(_first(res, parts))
                if ev is not None:
                    fx.event = ev
                    break
        for rule_id, _s, parts in self.sex_rules.get(rtype, ()):
            coded = [c["code"] for c in walk(res, parts) if isinstance(c, dict) and isinstance(c.get("code"), str)]
            if any(code.startswith(tuple(_s.prefixes)) for code in coded):
                fx.xrule = rule_id
                if fx.event is None:
                    fx.event = received
                break
        if rtype == "Observation":
            self._vitals(res, out)
        if timely:
            self._timeliness(rtype, res, received, out)
        uq = self.unique.get(rtype)
        if uq:
            vals = [self._key_value(res, parts, idcheck) for parts in uq[0]]
            if any(vals):
                fx.ukey = "|".join(vals)[:500]
                if uq[1]:
                    fx.uid = self._key_value(res, _split(uq[1]), idcheck)[:64] or None
        return fx

    def check_codes(self, rtype: str, res: dict[str, Any], out: list[Found]) -> None:
        """Codes in their value sets (through the terminology service when it knows the system)."""
        for b, parts in self.bindings.get(rtype, ()):
            holders = _extension(res, b.extension) if b.extension else [res]
            for h in holders:
                bad = [c.get("code") for c in walk(h, parts)
                       if isinstance(c, dict) and c.get("system") == b.system and isinstance(c.get("code"), str)
                       and not self.code_ok(b.system, c["code"], b.valueset)]
                if bad:
                    out.append(Found(f"conformance.{rtype}.{b.id}", f"{rtype}.{b.path}",
                                     f"{b.title}：代码 {bad[0]!r} 不在值集内"))
                    break

    def code_candidates(self, rtype: str, res: dict[str, Any]) -> tuple[tuple[int, tuple[tuple[str, ...], ...]], ...]:
        """What :meth:`check_codes` judges, gathered without the terminology service (in the importer's
        worker): per binding of the type (its position) that has any, the codes of its system in each holder."""
        out = []
        for k, (b, parts) in enumerate(self.bindings.get(rtype, ())):
            holders = _extension(res, b.extension) if b.extension else [res]
            per = tuple(tuple(c["code"] for c in walk(h, parts)
                              if isinstance(c, dict) and c.get("system") == b.system and isinstance(c.get("code"), str))
                        for h in holders)
            if any(per):
                out.append((k, per))
        return tuple(out)

    def check_candidates(self, rtype: str, candidates: tuple[tuple[int, tuple[tuple[str, ...], ...]], ...],
                         out: list[Found]) -> None:
        """:meth:`check_codes` on what :meth:`code_candidates` gathered from the same resource."""
        bindings = self.bindings.get(rtype, ())
        for k, per in candidates:
            b = bindings[k][0]
            for codes in per:
                bad = [c for c in codes if not self.code_ok(b.system, c, b.valueset)]
                if bad:
                    out.append(Found(f"conformance.{rtype}.{b.id}", f"{rtype}.{b.path}",
                                     f"{b.title}：代码 {bad[0]!r} 不在值集内"))
                    break

    @staticmethod
    def _key_value(res: dict[str, Any], parts: tuple[str, ...], idcheck: gb11643.IdCheck | None) -> str:
        if parts == ("$id_number",):
            return idcheck.number if idcheck is not None else ""
        v = _first(res, parts)
        return v if isinstance(v, str) else ""

    def _id_number(self, rtype: str, res: dict[str, Any], out: list[Found]) -> gb11643.IdCheck | None:
        for ident in res.get("identifier") or ():
            if isinstance(ident, dict) and ident.get("system") == self.id_system \
                    and isinstance(ident.get("value"), str):
                chk = gb11643.validate(ident["value"], today=date(2100, 1, 1))
                if not chk.valid and rtype in self.id_number_types:
                    out.append(Found(f"conformance.{rtype}.id-number", f"{rtype}.identifier",
                                     f"身份证件号码 {ident['value']!r} 不符合 GB 11643 ({', '.join(chk.errors)})"))
                return chk
        return None

    def _patient(self, res: dict[str, Any], fx: Facts, idcheck: gb11643.IdCheck | None, received: int) -> None:
        out = fx.findings
        fx.gender = res.get("gender") if isinstance(res.get("gender"), str) else None
        bd = res.get("birthDate")
        fx.birth = parse_time(bd)
        dd = res.get("deceasedDateTime")
        fx.death = parse_time(dd) if dd else None
        if self.registry is not None and res.get("active") is not False:
            # the ID number keys the registry look-up only when it is this person's own (valid, and its
            # birth date and sex agree: not the mother's number on a newborn); else the master index may
            own = idcheck is not None and idcheck.valid and (
                not (isinstance(bd, str) and len(bd) >= 4 and idcheck.birth_date is not None)
                or bd[:4] == f"{idcheck.birth_date.year:04d}") and (
                idcheck.sex is None or fx.gender not in ("male", "female") or fx.gender == idcheck.sex)
            fx.ref = (idcheck.number if own and idcheck is not None else None, _name_text(res), _phone(res),
                      _home_address(res))
        if idcheck is None or idcheck.sex is None:
            return
        if "Patient" in self.id_sex_types and fx.gender in ("male", "female") and fx.gender != idcheck.sex:
            out.append(Found("consistency.Patient.id-sex", "Patient.gender",
                             f"性别 {fx.gender} 与身份证号的性别 ({idcheck.sex}) 不符"))
        if "Patient" in self.id_birth_types and isinstance(bd, str) and len(bd) == 10 and \
                idcheck.birth_date is not None and bd != idcheck.birth_date.isoformat():
            out.append(Found("consistency.Patient.id-birthdate", "Patient.birthDate",
                             f"出生日期 {bd} 与身份证号的出生日期 {idcheck.birth_date.isoformat()} 不符"))

    def _vitals(self, res: dict[str, Any], out: list[Found]) -> None:
        parts = [res, *[c for c in res.get("component") or () if isinstance(c, dict)]]
        for p in parts:
            vq = p.get("valueQuantity")
            if not isinstance(vq, dict) or not isinstance(vq.get("value"), int | float):
                continue
            for c in walk(p, ("code", "coding")):
                code = c.get("code") if isinstance(c, dict) else None
                rng = self.vitals.get(code) if isinstance(code, str) else None
                if rng is None or (vq.get("code") or vq.get("unit")) != rng.unit:
                    continue
                if not rng.low <= vq["value"] <= rng.high:
                    out.append(Found("consistency.Observation.vital-range", "Observation.value",
                                     f"{rng.title} {vq['value']} {rng.unit} 超出合理范围 {rng.low}-{rng.high}"))
                    return

    def _timeliness(self, rtype: str, res: dict[str, Any], received: int, out: list[Found]) -> None:
        paths = self.t_event.get(rtype)
        if not paths:
            return
        ev = None
        for parts in paths:
            v = _first(res, parts)
            ev = parse_time(v)
            if ev is not None:
                if isinstance(v, str) and len(v) == 10:
                    ev += DAY_US - 1  # a bare date: the end of that day
                break
        if ev is None:
            return
        limit = self.t_hours.get(rtype, self.t_default)
        if rtype == "Condition" and self.class_a:
            codes = [c.get("code") for c in walk(res, ("code", "coding")) if isinstance(c, dict)]
            if any(isinstance(x, str) and x.startswith(self.class_a) for x in codes):
                limit = self.t_class_a
        late = received - ev
        if late > limit * HOUR_US:
            out.append(Found(f"timeliness.{rtype}", f"{rtype}.meta.lastUpdated",
                             f"事件后 {late / HOUR_US:.1f} 小时才上传（时限 {limit:g} 小时）"))

    def sex_age_problem(self, rule_id: str, gender: str | None, birth: int | None, event: int | None) -> str | None:
        """Why a sex/age-restricted code does not fit its subject, or None."""
        s = self.sex_rule_by_id.get(rule_id)
        if s is None:
            return None
        if gender in ("male", "female") and gender != s.sex:
            return f"{s.title}：患者性别为 {gender}"
        if birth is not None and event is not None and (s.min_age is not None or s.max_age is not None):
            age = (event - birth) / (365.25 * DAY_US)
            if (s.min_age is not None and age < s.min_age) or (s.max_age is not None and age > s.max_age):
                return f"{s.title}：患者年龄 {age:.0f} 岁"
        return None
