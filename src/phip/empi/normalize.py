"""Identity normalisers: one small function per element of a Patient (after SanteDB's transforms).

:func:`features` turns a Patient resource into :class:`Features`, the flat, comparable view the
matcher stores in ``empi_record.features`` and compares: the name in simplified hanzi and as
toneless pinyin (so homophones and traditional characters meet), the newborn placeholder flag
(「某某之子/之女」), birth date, sex, phones, the county (GB/T 2260 division code, else the postal
code) and address text, the resident identity number (GB 11643, normalised and validated) and the
other documents (CV02.01.101 typed identifiers).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, fields
from datetime import date
from functools import lru_cache
from typing import Any

from phip.cn import gb11643

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
"""``Patient.identifier.system`` of the resident identity number (居民身份证号码)."""
ID_TYPE_SYSTEM = "urn:oid:2.16.156.10011.2.3.1.1"
"""CV02.01.101 identity document type (身份证件类别代码)."""
ID_TYPES: dict[str, str] = {
    "01": "居民身份证", "02": "居民户口簿", "03": "护照", "04": "军官证", "05": "驾驶证",
    "06": "港澳居民来往内地通行证", "07": "台湾居民来往内地通行证", "99": "其他法定有效证件",
}
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DIVISION_EXT = "urn:phip:ext:division-code"

_PLACEHOLDER = re.compile(r"^(?P<mother>.*?)(之子|之女|之男|之婴|之儿|婴儿|新生儿)[一二三四五六12345]?$")
_LATIN_PLACEHOLDER = re.compile(r"^(baby|infant|newborn)\b", re.I)
_NON_NAME = re.compile(r"[\s·•・.\-'’,，()（）]+")
_DIGITS = re.compile(r"\D+")


@lru_cache(maxsize=1)
def _t2s() -> Any:
    from opencc import OpenCC

    return OpenCC("t2s")


@lru_cache(maxsize=200_000)
def simplify(text: str) -> str:
    """Traditional → simplified Chinese (OpenCC ``t2s``), NFKC (full-width → half-width), no spaces."""
    s = unicodedata.normalize("NFKC", text)
    s = _NON_NAME.sub("", s)
    if any("\u3400" <= ch <= "\u9fff" for ch in s):
        s = _t2s().convert(s)
    return s.lower()


@lru_cache(maxsize=200_000)
def pinyin(text: str) -> str:
    """Toneless pinyin of a (simplified) name, syllables joined: 张伟 → ``zhangwei``; latin kept."""
    if not any("\u3400" <= ch <= "\u9fff" for ch in text):
        return text.lower()
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(text)).lower()


def placeholder_mother(name: str) -> str | None:
    """The mother's name in a newborn placeholder name (「周璐萌之子」 → ``周璐萌``), else None."""
    s = simplify(name)
    m = _PLACEHOLDER.match(s)
    if m:
        return m.group("mother")
    if _LATIN_PLACEHOLDER.match(name.strip()):
        return ""
    return None


def normalize_phone(value: str) -> str | None:
    """Digits only, without the +86/0086 prefix; None when fewer than 7 digits."""
    d = _DIGITS.sub("", unicodedata.normalize("NFKC", value))
    if d.startswith("0086"):
        d = d[4:]
    elif d.startswith("86") and len(d) == 13:
        d = d[2:]
    return d if len(d) >= 7 else None


def parse_date(value: Any) -> str | None:
    """A FHIR date as ``YYYY-MM-DD``, ``YYYY-MM`` or ``YYYY`` (None when unreadable)."""
    if not isinstance(value, str):
        return None
    v = value.strip()[:10]
    if re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", v):
        return v
    return None


@dataclass(frozen=True, slots=True)
class IdNumber:
    number: str
    valid: bool
    #: the number's birth date / sex agree with the record (not, e.g., the mother's number)
    own: bool
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def check_resident_id(raw: str, birth: str | None = None, sex: str | None = None,
                      today: date | None = None) -> IdNumber:
    """Normalise and validate a GB 11643 number against the record it sits on (cached).

    An unknown area code is a warning only (historical codes exist).  ``own`` is False when a
    valid number's birth date or sex contradicts the record (a newborn under the mother's number):
    such a number is never used as this person's key.
    """
    return _check_resident_id(raw, birth, sex, today or date.today())


@lru_cache(maxsize=100_000)
def _check_resident_id(raw: str, birth: str | None, sex: str | None, today: date) -> IdNumber:
    from phip.cn.regions import is_known

    chk = gb11643.validate(raw, today=today)
    errors = tuple(e for e in chk.errors if e != gb11643.E_AREA)
    warnings: tuple[str, ...] = ()
    if chk.area_code and (gb11643.E_AREA in chk.errors or not is_known(chk.area_code)):
        warnings = (gb11643.E_AREA,)
    valid = not errors and chk.birth_date is not None
    own = True
    if valid and birth and len(birth) == 10 and chk.birth_date is not None:
        b = chk.birth_date.isoformat()
        swapped = f"{birth[:4]}-{birth[8:10]}-{birth[5:7]}"
        if b != birth and b != swapped:
            own = False
    if valid and sex in ("male", "female") and chk.sex is not None and chk.sex != sex:
        own = False
    return IdNumber(chk.number, valid, own, errors, warnings)


@dataclass(slots=True)
class Features:
    """The comparable view of one Patient (stored as JSON, compared by :mod:`phip.empi.compare`)."""

    pid: str
    name: str | None = None  # simplified hanzi / lower-case latin, no spaces
    family: str | None = None
    given: str | None = None
    py: str | None = None  # toneless pinyin of the name
    placeholder: bool = False
    mother_name: str | None = None  # from a placeholder name
    birth: str | None = None  # YYYY-MM-DD (or shorter)
    sex: str | None = None  # male | female
    phones: list[str] = field(default_factory=list)
    area: str | None = None  # county division code, else postal code
    addr: str | None = None  # address text, simplified, no spaces
    rid: str | None = None  # resident ID number (normalised)
    rid_valid: bool = False
    rid_own: bool = True
    docs: list[tuple[str, str]] = field(default_factory=list)  # (system, value) other documents
    records: list[tuple[str, str]] = field(default_factory=list)  # (system, value) record numbers
    # display values for the golden record
    name_text: str | None = None
    phone_raw: list[str] = field(default_factory=list)
    address: dict[str, Any] | None = None
    updated: str | None = None
    active: bool = True

    @property
    def trusted_id(self) -> str | None:
        """The resident ID number when it may serve as a deterministic key."""
        return self.rid if self.rid and self.rid_valid and self.rid_own else None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Features:
        f = cls(**d)
        f.docs = [tuple(x) for x in f.docs]  # type: ignore[misc]
        f.records = [tuple(x) for x in f.records]  # type: ignore[misc]
        return f


_FIELDS = tuple(f.name for f in fields(Features))


def _is_record_number(ident: dict[str, Any]) -> bool:
    for c in (ident.get("type") or {}).get("coding") or []:
        if c.get("system") == V2_0203 and c.get("code") in ("MR", "PI", "VN", "AN", "MB", "SN"):
            return True
    sysu = str(ident.get("system") or "")
    return sysu.endswith(":mrn") or sysu.endswith(":member")


def _doc_type(ident: dict[str, Any]) -> str | None:
    for c in (ident.get("type") or {}).get("coding") or []:
        if c.get("system") == ID_TYPE_SYSTEM:
            return str(c.get("code"))
    return None


def _pick_name(names: list[Any]) -> dict[str, Any] | None:
    names = [n for n in names if isinstance(n, dict)]
    if not names:
        return None
    for use in ("official", "usual", None, "temp", "nickname", "anonymous", "old", "maiden"):
        for n in names:
            if n.get("use") == use and not (n.get("period") or {}).get("end"):
                return n
    return names[0]


def name_parts(n: dict[str, Any]) -> tuple[str, str, str]:
    """(full text, family, given) of a HumanName; Chinese order family+given, no space."""
    family = str(n.get("family") or "")
    given = "".join(str(g) for g in n.get("given") or [])
    text = str(n.get("text") or "")
    if not text:
        han = any("\u3400" <= ch <= "\u9fff" for ch in family + given)
        text = family + given if han else " ".join(x for x in (" ".join(n.get("given") or []), family) if x)
    return text, family, given


def features(patient: dict[str, Any], today: date | None = None) -> Features:
    """The :class:`Features` of a Patient resource."""
    f = Features(pid=str(patient.get("id") or ""))
    f.active = patient.get("active", True) is not False
    f.updated = (patient.get("meta") or {}).get("lastUpdated")
    f.birth = parse_date(patient.get("birthDate"))
    g = patient.get("gender")
    f.sex = g if g in ("male", "female") else None
    n = _pick_name(patient.get("name") or [])
    if n is not None:
        text, family, given = name_parts(n)
        mother = placeholder_mother(text) if text else None
        f.name_text = text or None
        if mother is not None:
            f.placeholder = True
            f.mother_name = mother or None
        elif text:
            f.name = simplify(text)
            f.py = pinyin(f.name)
            f.family = simplify(family) or None
            f.given = simplify(given) or None
    for t in patient.get("telecom") or []:
        if isinstance(t, dict) and t.get("system") in ("phone", "sms", None) and t.get("value"):
            p = normalize_phone(str(t["value"]))
            if p and p not in f.phones:
                f.phones.append(p)
                f.phone_raw.append(str(t["value"]))
    addrs = [a for a in patient.get("address") or [] if isinstance(a, dict)]
    if addrs:
        a = next((x for x in addrs if x.get("use") == "home" and not (x.get("period") or {}).get("end")), addrs[0])
        f.address = a
        code = next((str(e.get("valueCode")) for e in a.get("extension") or []
                     if isinstance(e, dict) and e.get("url") == DIVISION_EXT and e.get("valueCode")), None)
        f.area = code or (str(a["postalCode"]).strip() if a.get("postalCode") else None)
        line = "".join(str(x) for x in a.get("line") or [])
        text = line or str(a.get("text") or "")
        if a.get("city") and line and line[:1] < "\u3400":  # latin address: keep the town
            text = f"{line} {a['city']}"
        f.addr = simplify(text) or None
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict) or not ident.get("value"):
            continue
        system = str(ident.get("system") or "")
        value = str(ident["value"])
        dtype = _doc_type(ident)
        if system == RESIDENT_ID_SYSTEM or (dtype == "01" and not system):
            if f.rid is None:
                chk = check_resident_id(value, f.birth, f.sex, today)
                f.rid, f.rid_valid, f.rid_own = chk.number, chk.valid, chk.own
            continue
        if _is_record_number(ident):
            f.records.append((system, value.strip()))
        else:
            v = "".join(unicodedata.normalize("NFKC", value).split()).upper()
            f.docs.append((system or f"cv02.01.101:{dtype}", v))
    return f
