"""``phip export --deidentify PROFILE``: a de-identified NDJSON extract (GB/T 37964).

A profile (JSON, ``phip/privacy/profiles/<name>.json`` or a file of one's own) says:

- ``drop_types``: types not exported at all (people other than the patient, free-text documents);
- ``remove``: elements removed per type (``"*"`` for every type; ``address.line`` removes
  ``line`` inside each ``address``) — the direct identifiers: name, ID numbers and other
  identifiers, phones, address detail, narrative text, notes;
- ``pseudonymize_types``: ids of these types become keyed pseudonyms (HMAC-SHA256 with the node's
  pseudonym key: the same person gets the same pseudonym in every extract of this node, and no one
  without the key can compute it from an ID), and every reference to them is rewritten;
- ``dates``: ``{"mode": "shift", "max_days": N}`` moves every date of a patient's record by the
  same keyed offset in [-N, N] days (intervals stay true), or ``{"mode": "generalize",
  "precision": "month"|"year"}`` truncates them; ``birth_date``: ``year`` or ``month``;
- ``quasi_identifiers`` (``age_band``, ``sex``, ``county``), ``age_band_years`` and ``k``: the
  k-anonymity check.  Patients whose class (same age band, sex and county) holds fewer than k
  patients are suppressed with all their data; the report lists the classes suppressed (sizes
  only) and the k reached.

The extract is written to ``OUT`` with ``deidentification-report.json`` beside it.
"""

from __future__ import annotations

import hmac
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson

from phip.audit.service import patient_of
from phip.bulk.export import iter_type, types_present

PROFILES = Path(__file__).parent / "profiles"
_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")
_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


class ProfileError(Exception):
    pass


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.json"))


def load_profile(name: str) -> dict[str, Any]:
    path = Path(name)
    if not path.suffix:
        path = PROFILES / f"{name}.json"
    if not path.exists():
        raise ProfileError(f"no de-identification profile {name!r} (built in: {', '.join(builtin_profiles())}; "
                           "or give the path of a JSON profile)")
    try:
        prof: dict[str, Any] = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ProfileError(f"{path} is not valid JSON: {e}") from None
    mode = (prof.get("dates") or {}).get("mode", "shift")
    if mode not in ("shift", "generalize", "keep"):
        raise ProfileError(f"{path}: dates.mode must be shift, generalize or keep, not {mode!r}")
    bad = [q for q in prof.get("quasi_identifiers", []) if q not in ("age_band", "sex", "county")]
    if bad:
        raise ProfileError(f"{path}: unknown quasi-identifier(s) {bad} (age_band, sex, county)")
    if int(prof.get("k", 1)) < 1:
        raise ProfileError(f"{path}: k must be at least 1")
    return prof


@dataclass(slots=True)
class Report:
    profile: str
    k: int
    patients: int = 0
    patients_suppressed: int = 0
    classes: int = 0
    classes_suppressed: list[dict[str, Any]] = field(default_factory=list)
    k_reached: int | None = None
    resources: dict[str, int] = field(default_factory=dict)
    resources_suppressed: int = 0
    dropped_types: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Deidentifier:
    def __init__(self, profile: dict[str, Any], key: bytes, today: date | None = None) -> None:
        self.p = profile
        self.key = key
        self.today = today or datetime.now(UTC).date()
        self.pseudo_types = frozenset(profile.get("pseudonymize_types", []))
        self.drop = frozenset(profile.get("drop_types", []))
        rem = profile.get("remove", {})
        self.remove_all = [r.split(".") for r in rem.get("*", [])]
        self.remove = {t: [r.split(".") for r in v] for t, v in rem.items() if t != "*"}
        self.dates = profile.get("dates") or {"mode": "shift", "max_days": 180}
        self.birth = profile.get("birth_date", "year")
        self.band = int(profile.get("age_band_years", 10))
        self.qi = list(profile.get("quasi_identifiers", ["age_band", "sex", "county"]))

    # -- keyed functions ---------------------------------------------------------------------------
    def _mac(self, text: str) -> bytes:
        return hmac.new(self.key, text.encode(), sha256).digest()

    def pseudonym(self, rtype: str, rid: str) -> str:
        return "ps-" + self._mac(f"{rtype}/{rid}").hex()[:24]

    def shift_days(self, patient: str | None) -> int:
        n = int(self.dates.get("max_days", 180))
        if patient is None or n <= 0:
            return 0
        v = int.from_bytes(self._mac(f"shift:{patient}")[:4], "big") % (2 * n + 1) - n
        return v or 1  # never zero: a shift of 0 would leave the true dates

    # -- quasi-identifiers -------------------------------------------------------------------------
    def qi_class(self, patient: dict[str, Any]) -> tuple[str, ...]:
        out: list[str] = []
        for q in self.qi:
            if q == "sex":
                out.append(str(patient.get("gender") or "unknown"))
            elif q == "age_band":
                out.append(self.age_band(patient.get("birthDate")))
            else:
                out.append(county_of(patient) or "unknown")
        return tuple(out)

    def age_band(self, birth: Any) -> str:
        if not isinstance(birth, str) or len(birth) < 4 or not birth[:4].isdigit():
            return "unknown"
        y = int(birth[:4])
        m = int(birth[5:7]) if len(birth) >= 7 else 7
        d = int(birth[8:10]) if len(birth) >= 10 else 1
        age = self.today.year - y - ((self.today.month, self.today.day) < (m, d))
        if age < 0:
            return "unknown"
        lo = age // self.band * self.band
        return f"{lo}+" if lo >= 90 else f"{lo}-{lo + self.band - 1}"

    # -- one resource -----------------------------------------------------------------------------
    def transform(self, doc: dict[str, Any], patient: str | None) -> dict[str, Any]:
        rtype = doc["resourceType"]
        for path in self.remove_all + self.remove.get(rtype, []):
            _remove(doc, path)
        doc.pop("meta", None)
        if rtype == "Patient":
            self._patient(doc)
        days = self.shift_days(patient) if self.dates.get("mode") == "shift" else 0
        out: dict[str, Any] = self._walk(doc, days, top=True)
        if rtype in self.pseudo_types:
            out["id"] = self.pseudonym(rtype, doc["id"])
        out["meta"] = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                                     "code": "PSEUDED", "display": "pseudonymized"}]}
        return out

    def _patient(self, doc: dict[str, Any]) -> None:
        b = doc.get("birthDate")
        if isinstance(b, str):
            doc["birthDate"] = b[:4] if self.birth == "year" else b[:7]
        for a in doc.get("address") or ():
            if isinstance(a, dict):
                code = _division(a)
                if code:  # keep the county (GB/T 2260, 6 digits), not the street
                    a["extension"] = [{"url": "urn:phip:ext:division-code", "valueCode": code[:6]}]

    def _walk(self, v: Any, days: int, top: bool = False, key: str = "") -> Any:
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k == "birthDate" or (top and k in ("id", "resourceType")):
                    out[k] = x
                elif k == "reference" and isinstance(x, str):
                    out[k] = self._ref(x)
                else:
                    out[k] = self._walk(x, days, key=k)
            return out
        if isinstance(v, list):
            return [self._walk(x, days, key=key) for x in v]
        if isinstance(v, str) and key not in ("code", "system", "version", "url", "value", "display"):
            return self._date(v, days)
        return v

    def _ref(self, ref: str) -> str:
        m = _REF.match(ref)
        if m and m.group(1) in self.pseudo_types:
            return f"{m.group(1)}/{self.pseudonym(m.group(1), m.group(2))}"
        return ref

    def _date(self, s: str, days: int) -> str:
        m = _DATE.match(s)
        if m is None:
            return s
        mode = self.dates.get("mode")
        if mode == "generalize":
            return s[:4] if self.dates.get("precision") == "year" else s[:7]
        if mode != "shift" or not days:
            return s
        y, mo, d, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4) or ""
        try:
            if d is None:
                shifted = date(y, mo, 15) + timedelta(days=days)
                return f"{shifted.year:04d}-{shifted.month:02d}"
            shifted = date(y, mo, int(d)) + timedelta(days=days)
        except ValueError:
            return s
        return shifted.isoformat() + rest


def county_of(patient: dict[str, Any]) -> str | None:
    for a in patient.get("address") or ():
        if isinstance(a, dict):
            code = _division(a)
            if code:
                return code[:6]
            if isinstance(a.get("district"), str):
                return str(a["district"])
    return None


def _division(a: dict[str, Any]) -> str | None:
    for e in a.get("extension") or ():
        if isinstance(e, dict) and e.get("url") == "urn:phip:ext:division-code" and isinstance(e.get("valueCode"), str):
            return str(e["valueCode"])
    return None


def _remove(doc: Any, path: list[str]) -> None:
    if isinstance(doc, list):
        for x in doc:
            _remove(x, path)
        return
    if not isinstance(doc, dict):
        return
    if len(path) == 1:
        doc.pop(path[0], None)
        return
    _remove(doc.get(path[0]), path[1:])


def run(store: Any, out: Path, profile: dict[str, Any], key: bytes, *, types: list[str] | None = None,
        since_us: int | None = None, progress: Callable[[str, int], None] | None = None) -> Report:
    """Write the de-identified extract and its report; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    d = Deidentifier(profile, key)
    k = int(profile.get("k", 5))
    rep = Report(str(profile.get("name", "custom")), k)
    # pass 1: the quasi-identifier class of every patient
    classes: dict[str, tuple[str, ...]] = {}
    for body in iter_type(store, "Patient", None, None):
        doc = orjson.loads(body)
        classes[doc["id"]] = d.qi_class(doc)
    sizes = Counter(classes.values())
    suppressed_ids = {pid for pid, c in classes.items() if sizes[c] < k}
    rep.patients = len(classes)
    rep.patients_suppressed = len(suppressed_ids)
    rep.classes = len(sizes)
    rep.classes_suppressed = [{"class": dict(zip(d.qi, c, strict=True)), "size": n}
                              for c, n in sorted(sizes.items()) if n < k]
    kept = [n for n in sizes.values() if n >= k]
    rep.k_reached = min(kept) if kept else None
    # pass 2: the extract
    wanted = types or types_present(store)
    for rtype in wanted:
        if rtype in d.drop:
            n = sum(1 for _ in iter_type(store, rtype, since_us, None))
            if n:
                rep.dropped_types[rtype] = n
            continue
        n = 0
        path = out / f"{rtype}.ndjson"
        with path.open("wb") as f:
            for body in iter_type(store, rtype, since_us, None):
                doc = orjson.loads(body)
                patient = patient_of(rtype, doc.get("id", ""), body)
                if patient in suppressed_ids:
                    rep.resources_suppressed += 1
                    continue
                f.write(orjson.dumps(d.transform(doc, patient)) + b"\n")
                n += 1
                if progress is not None and n % 1000 == 0:
                    progress(rtype, n)
        if n:
            rep.resources[rtype] = n
        else:
            path.unlink()
    (out / "deidentification-report.json").write_bytes(orjson.dumps(rep.as_dict(), option=orjson.OPT_INDENT_2))
    return rep
