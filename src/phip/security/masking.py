"""Role-based masking of direct identifiers (GB/T 35273 去标识化展示).

- identity numbers: the first 6 (the region) and last 4 characters kept, ``510104********1234``;
- phone numbers: the first 3 and last 4 digits kept, ``138****1234``;
- addresses: the district and above kept, the detail (``line``, ``text``, ``postalCode``) masked.

Applied to people (Patient, RelatedPerson, Person, Practitioner) on the way out, for roles
whose ``[security.masking]`` lists the field.  Masking is idempotent, and
:func:`restore` puts the stored values back when a masked resource is written back unchanged.
"""

from __future__ import annotations

import copy
import re
from typing import Any

PEOPLE = frozenset({"Patient", "RelatedPerson", "Person", "Practitioner"})
ID_SYSTEMS = frozenset({"urn:oid:2.16.156.10011.1.3"})
ID_TYPE_SYSTEM = "urn:oid:2.16.156.10011.2.3.1.1"
_ID_RE = re.compile(r"^\d{17}[\dXx]$|^\d{15}$")
MASKED_ADDRESS = "****"


def mask_id(v: str) -> str:
    if len(v) <= 10:
        return v[:2] + "*" * max(len(v) - 2, 0)
    return v[:6] + "*" * (len(v) - 10) + v[-4:]


def mask_phone(v: str) -> str:
    digits = v.strip()
    if len(digits) < 8:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def _is_id_number(ident: dict[str, Any]) -> bool:
    if ident.get("system") in ID_SYSTEMS:
        return True
    for c in (ident.get("type") or {}).get("coding") or []:
        if c.get("system") == ID_TYPE_SYSTEM and c.get("code") == "01":
            return True
    v = ident.get("value")
    return isinstance(v, str) and bool(_ID_RE.match(v))


def _mask_address(a: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    if out.get("line"):
        out["line"] = [MASKED_ADDRESS for _ in out["line"]]
    if out.get("text"):
        head = "".join(str(out.get(k) or "") for k in ("state", "city", "district"))
        out["text"] = (head + MASKED_ADDRESS) if head else MASKED_ADDRESS
    if out.get("postalCode"):
        out["postalCode"] = MASKED_ADDRESS
    return out


def mask(doc: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``doc`` with ``fields`` (id, phone, address) masked; ``contact`` included."""
    if not fields or doc.get("resourceType") not in PEOPLE:
        return doc
    out = copy.deepcopy(doc)
    _mask_person(out, fields)
    for c in out.get("contact") or []:
        if isinstance(c, dict):
            _mask_person(c, fields)
    return out


def _mask_person(d: dict[str, Any], fields: tuple[str, ...]) -> None:
    if "id" in fields:
        for ident in d.get("identifier") or []:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str) and _is_id_number(ident):
                ident["value"] = mask_id(ident["value"])
    if "phone" in fields:
        for t in d.get("telecom") or []:
            if isinstance(t, dict) and t.get("system") in ("phone", "sms", None) and isinstance(t.get("value"), str):
                t["value"] = mask_phone(t["value"])
    if "address" in fields:
        addr = d.get("address")
        if isinstance(addr, list):
            d["address"] = [_mask_address(a) if isinstance(a, dict) else a for a in addr]
        elif isinstance(addr, dict):
            d["address"] = _mask_address(addr)


def restore(new: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """Values of ``new`` that are the masked form of the stored ones get the stored value back
    (a client that read a masked resource and wrote it back must not erase the real data)."""
    if stored is None or new.get("resourceType") not in PEOPLE:
        return new
    out = copy.deepcopy(new)
    old_ids = [i for i in stored.get("identifier") or [] if isinstance(i, dict)]
    for ident in out.get("identifier") or []:
        v = ident.get("value") if isinstance(ident, dict) else None
        if isinstance(v, str) and "*" in v:
            for o in old_ids:
                ov = o.get("value")
                if isinstance(ov, str) and o.get("system") == ident.get("system") and mask_id(ov) == v:
                    ident["value"] = ov
                    break
    old_tel = [t for t in stored.get("telecom") or [] if isinstance(t, dict)]
    for t in out.get("telecom") or []:
        v = t.get("value") if isinstance(t, dict) else None
        if isinstance(v, str) and "*" in v:
            for o in old_tel:
                ov = o.get("value")
                if isinstance(ov, str) and mask_phone(ov) == v:
                    t["value"] = ov
                    break
    addrs = out.get("address")
    old_addrs = stored.get("address")
    if isinstance(addrs, list) and isinstance(old_addrs, list):
        for i, a in enumerate(addrs):
            if isinstance(a, dict) and MASKED_ADDRESS in str(a) and i < len(old_addrs):
                oa = old_addrs[i]
                if isinstance(oa, dict) and _mask_address(oa) == a:
                    addrs[i] = oa
    return out
