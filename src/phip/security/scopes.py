"""SMART on FHIR scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

``<context>/<Type|*>.<permissions>``: context ``patient`` (only the patient in context),
``user`` (what the user may see) or ``system`` (what the client may see); permissions
``read``/``write``/``*`` (v1) or any ordered subset of ``cruds`` (v2: create, read, update,
delete, search).  Query-restricted v2 scopes (``?category=…``) are refused rather than
silently widened.  Scopes only narrow: the role's rules still apply on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

_RE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.(read|write|\*|c?r?u?d?s?)$")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
ACTIONS = "cruds"


class ScopeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Scope:
    context: str  # patient | user | system
    rtype: str  # a resource type or *
    actions: str  # subset of cruds


def parse(text: str) -> Scope | None:
    """One scope, or None for a scope that is not a resource scope (openid, launch, offline_access…)."""
    if "/" not in text:
        return None
    m = _RE.match(text)
    if m is None or not m.group(3):
        raise ScopeError(f"{text!r} is not a SMART resource scope (context/Type.permissions)")
    perms = V1.get(m.group(3), m.group(3))
    return Scope(m.group(1), m.group(2), perms)


@cache
def compile_scopes(scopes: tuple[str, ...]) -> tuple[Scope, ...]:
    out = []
    for s in scopes:
        p = parse(s)
        if p is not None:
            out.append(p)
    return tuple(out)


def grants(scopes: tuple[str, ...] | None, rtype: str, action: str) -> str | None:
    """The widest context granting ``action`` on ``rtype``: ``system``/``user`` (unrestricted by
    the scope), ``patient`` (only the patient in context) or None (not granted)."""
    if scopes is None:
        return "system"
    best: str | None = None
    for s in compile_scopes(scopes):
        if action in s.actions and s.rtype in ("*", rtype):
            if s.context in ("system", "user"):
                return s.context
            best = "patient"
    return best


def any_type(scopes: tuple[str, ...] | None, action: str) -> bool:
    """Whether some scope grants ``action`` on every type (``*``)."""
    if scopes is None:
        return True
    return any(action in s.actions and s.rtype == "*" for s in compile_scopes(scopes))


def types_granted(scopes: tuple[str, ...] | None, action: str) -> set[str] | None:
    """Types some scope names for ``action`` (None: every type)."""
    if any_type(scopes, action):
        return None
    return {s.rtype for s in compile_scopes(scopes or ()) if action in s.actions}


def narrow(requested: str | None, allowed: str | None) -> str:
    """The scopes a token gets: those requested that the client or user may have (``allowed``
    empty or None: any resource scope).  Unknown or unparseable requested scopes are an error."""
    req = (requested or "").split()
    allow = (allowed or "").split()
    if not req:
        return " ".join(allow) if allow else "user/*.cruds"
    out = []
    for s in req:
        p = parse(s)
        if p is None:
            out.append(s)
            continue
        if not allow or s in allow or _covered(p, allow):
            out.append(s)
        else:
            raise ScopeError(f"scope {s!r} is not allowed for this client")
    return " ".join(out)


def _covered(p: Scope, allowed: list[str]) -> bool:
    for a in allowed:
        q = parse(a)
        if q is not None and q.context == p.context and q.rtype in ("*", p.rtype) and set(p.actions) <= set(
                q.actions):
            return True
    return False
