"""Write hooks: local codes gain their standard codings, profiles are checked, the cache stays fresh.

BEFORE_WRITE:

1. (every resource, bulk import included) each ``CodeableConcept.coding`` in a local code system
   (an institution's CodeSystem tagged ``local``, or any ``urn:phip:org:…`` system) gains the
   standard codings its ConceptMaps give,
   beside the original (which is kept); a local code without a mapping is recorded in
   ``terminology_unmapped`` and returned as a warning;
2. (API writes, not ``phip import``) the profiles that apply (claimed in ``meta.profile`` or
   configured for the type) are checked with the node's strictness (reject | warn | off).

AFTER_WRITE: a write of a CodeSystem, ValueSet, ConceptMap, NamingSystem or StructureDefinition
marks the cache dirty.
"""

from __future__ import annotations

import weakref
from typing import Any

import orjson
import sqlalchemy as sa

from phip.core.hooks import WriteEvent
from phip.fhir.datetimes import now_us
from phip.fhir.errors import FhirError, Issue
from phip.terminology.service import LOCAL_PREFIX, TYPES, TerminologyService
from phip.terminology.settings import TerminologySettings

Json = dict[str, Any]


def _coding_lists(obj: Any, trail: list[str], out: list[tuple[list[Any], str]]) -> None:
    """Collect every ``coding`` array with its path (the path string is built only where one is found)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "coding" and isinstance(v, list):
                out.append((v, ".".join(trail) + ".coding"))
            elif isinstance(v, dict):
                if k not in ("meta", "text"):
                    trail.append(k)
                    _coding_lists(v, trail, out)
                    trail.pop()
            elif isinstance(v, list) and k != "contained":
                trail.append(k)
                for i, item in enumerate(v):
                    if isinstance(item, dict):
                        trail[-1] = f"{k}[{i}]"
                        _coding_lists(item, trail, out)
                trail.pop()


class IngestHooks:
    def __init__(self, svc: TerminologyService, settings: TerminologySettings) -> None:
        self.svc = svc
        self.settings = settings
        #: unmapped codes seen in a transaction, (system, code) -> [display, count, resource], until the
        #: next AFTER_WRITE (a create has no id before it; a bulk import fires all BEFORE_WRITEs first)
        self._pending: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], list[Any]]] = weakref.WeakKeyDictionary()

    # -- BEFORE_WRITE ---------------------------------------------------------------------------------
    def before_write(self, tx: Any, rtype: str, resource: Json, method: str) -> list[Issue] | None:
        """Local codes → standard codings (every write, bulk import included)."""
        if self.settings.map_local and rtype not in TYPES:
            return self.map_local(tx, rtype, resource) or None
        return None

    def before_write_profiles(self, tx: Any, rtype: str, resource: Json, method: str) -> list[Issue] | None:
        """Profile checks with the node's strictness (not during ``phip import``, whose batches must
        not fail on one resource: there the data-quality engine reports conformance)."""
        if self.settings.strictness != "off":
            return self.check_profiles(rtype, resource) or None
        return None

    def map_local(self, tx: Any, rtype: str, resource: Json) -> list[Issue]:
        raw = orjson.dumps(resource)
        others = self.svc.local_other_systems(fresh=False)
        if f'"system":"{LOCAL_PREFIX}'.encode() not in raw and not any(s in raw for s in others):
            return []
        svc = self.svc
        svc.refresh_if_due()
        found: list[tuple[list[Any], str]] = []
        _coding_lists(resource, [rtype], found)
        issues: list[Issue] = []
        unmapped: list[tuple[str, str, str | None]] = []
        for codings, path in found:
            added: list[Json] = []
            present: set[tuple[Any, Any]] | None = None
            for c in codings:
                if not isinstance(c, dict):
                    continue
                system, code = c.get("system"), c.get("code")
                if not isinstance(system, str) or not isinstance(code, str) or not svc.is_local(system, fresh=False):
                    continue
                std = svc.standard_codings(system, code, fresh=False)
                if not std:
                    unmapped.append((system, code, c.get("display")))
                    issues.append(Issue("warning", "code-invalid",
                                        f"The local code {code!r} of {system} has no mapping to a standard code",
                                        path, "PHIP-6201"))
                    continue
                if present is None:
                    present = {(x.get("system"), x.get("code")) for x in codings if isinstance(x, dict)}
                for st in std:
                    if (st["system"], st["code"]) not in present:
                        present.add((st["system"], st["code"]))
                        added.append(st)
            if added:
                codings.extend(added)
        if unmapped:  # counted at the next AFTER_WRITE (a bulk import's batch: all at once)
            acc = self._pending.setdefault(tx, {})
            ref = f"{rtype}/{resource['id']}" if resource.get("id") else None
            for system, code, display in unmapped:
                row = acc.setdefault((system[:500], code[:200]), [display, 0, ref])
                row[1] += 1
                row[2] = ref
        return issues

    def check_profiles(self, rtype: str, resource: Json) -> list[Issue]:
        from phip.terminology.profiles import check_profile, profiles_for

        profiles = profiles_for(self.svc, rtype, resource, self.settings.profiles)
        if not profiles:
            return []
        found: list[Issue] = []
        for p in profiles:
            found += check_profile(self.svc, p, resource)
        errors = [i for i in found if i.severity in ("error", "fatal")]
        if errors and self.settings.strictness == "reject":
            raise FhirError(422, errors[0].diagnostics, issues=found)
        return [Issue("warning", i.code, i.diagnostics, i.expression, i.msg_id) for i in found]

    # -- AFTER_WRITE -------------------------------------------------------------------------------------
    def after_write(self, tx: Any, event: WriteEvent) -> None:
        if event.resource_type in TYPES:
            self.svc.invalidate()
        pending = self._pending.pop(tx, None)
        if pending:
            record_unmapped(tx.conn, pending, f"{event.resource_type}/{event.id}")


def record_unmapped(conn: Any, codes: dict[tuple[str, str], list[Any]], ref: str) -> None:
    """Count each (system, code) seen without a mapping: ``codes`` maps it to [display, times, resource
    or None (then ``ref``)]; one upsert statement on both backends."""
    from phip.terminology.tables import unmapped_codes as t

    now = now_us()
    rows = [{"system": s, "code": c, "display": d, "count": n, "first_seen": now, "last_seen": now,
             "last_resource": (r or ref)[:200]} for (s, c), (d, n, r) in sorted(codes.items())]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        ins: Any = pg_insert(t)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        ins = sqlite_insert(t)
    stmt = ins.on_conflict_do_update(
        index_elements=[t.c.system, t.c.code],
        set_={"count": t.c.count + ins.excluded.count, "last_seen": ins.excluded.last_seen,
              "last_resource": ins.excluded.last_resource,
              "display": sa.func.coalesce(ins.excluded.display, t.c.display)},
    )
    conn.execute(stmt, rows)
