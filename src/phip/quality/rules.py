"""The quality rules as versioned data (``data/rules.json``), validated at load.

The file is the model: an operator edits it (required elements, code bindings, time limits,
plausible ranges) and the node checks it at start-up; a mistake is a :class:`RulesError` naming
the bad entry, never a silent skip.  :func:`load` returns :class:`Rules`, and
:meth:`Rules.catalogue` lists every concrete rule (id, dimension, resource type, element path,
title) — the ids that findings, Tasks and scorecards carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DATA = Path(__file__).parent / "data"
DIMENSIONS: tuple[str, ...] = ("completeness", "conformance", "consistency", "timeliness", "uniqueness", "upload")
Dimension = Literal["completeness", "conformance", "consistency", "timeliness", "uniqueness", "upload"]


class RulesError(ValueError):
    """The rules file is not valid (the message names the entry)."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(v: str) -> str:
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"not a valid regular expression {v!r}: {e}") from None
    return v


class When(_M):
    path: str
    in_: list[str] | None = Field(None, alias="in")
    not_in: list[str] | None = None
    exists: bool | None = None


class Required(_M):
    resource: str
    path: str
    title: str
    system: str | None = None
    when: When | None = None
    unless_age_days_below: int | None = None


class ResourceRef(_M):
    resource: str


class Phone(_M):
    resources: list[str]
    patterns: list[str]

    @field_validator("patterns")
    @classmethod
    def _re(cls, v: list[str]) -> list[str]:
        return [_check_regex(p) for p in v]


class Placeholder(_M):
    resources: list[str]
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _re(cls, v: str) -> str:
        return _check_regex(v)


class Resources(_M):
    resources: list[str]


class Binding(_M):
    id: str
    resource: str
    path: str
    system: str
    valueset: str | None
    title: str
    extension: str | None = None


class Fallback(_M):
    codes: list[str] | None = None
    pattern: str | None = None


class Conformance(_M):
    id_number: list[ResourceRef]
    phone: Phone
    placeholder_name: Placeholder
    traditional_name: Resources
    bindings: list[Binding]
    fallback_codes: dict[str, Fallback]

    @field_validator("fallback_codes", mode="before")
    @classmethod
    def _drop_about(cls, v: Any) -> Any:
        return {k: x for k, x in v.items() if not k.startswith("_")} if isinstance(v, dict) else v


class DateOrder(_M):
    resource: str
    earlier: str
    later: str
    title: str
    slack_days: float = 0


class EventInLife(_M):
    about: str | None = Field(None, alias="_about")
    slack_days: float = 1
    event: dict[str, list[str]]


class SexForCode(_M):
    id: str
    resource: str
    path: str
    prefixes: list[str]
    sex: Literal["male", "female"]
    title: str
    min_age: float | None = None
    max_age: float | None = None


class VitalRange(_M):
    code: str
    unit: str
    low: float
    high: float
    title: str


class RegistryCheck(_M):
    """A Patient recorded by an institution against the population registry's record of the same
    resident (same ID number): the registry's current name, phone and home address are the
    reference.  Registry records are the active Patients managed by an Organization typed with
    one of ``org_types`` (``system|code``)."""

    about: str | None = Field(None, alias="_about")
    org_types: list[str] = Field(min_length=1)
    fields: list[Literal["name", "phone", "address"]] = Field(min_length=1)

    @field_validator("org_types")
    @classmethod
    def _typed(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.count("|") != 1 or not all(t.split("|")):
                raise ValueError(f"an organization type is written system|code, not {t!r}")
        return v


class Consistency(_M):
    id_sex: Resources
    id_birthdate: Resources
    date_order: list[DateOrder]
    event_in_life: EventInLife
    sex_for_code: list[SexForCode]
    vital_ranges: list[VitalRange]
    registry: RegistryCheck | None = None


class ClassA(_M):
    about: str | None = Field(None, alias="_about")
    prefixes: list[str]


class Registrations(_M):
    """Registrations carry no event time of their own: one is late when it came in the same upload
    (within ``window_seconds``) as a late record of its patient at the same institution."""

    about: str | None = Field(None, alias="_about")
    types: list[Literal["Patient"]]
    window_seconds: float = Field(ge=0, le=86400)


class Timeliness(_M):
    default_hours: float
    class_a_hours: float
    class_a_codes: ClassA
    hours: dict[str, float]
    event: dict[str, list[str]]
    registrations: Registrations | None = None


class UniqueKey(_M):
    about: str | None = Field(None, alias="_about")
    keys: list[str] = Field(min_length=1)
    #: a value that must be equal when both records have it (``$id_number``: the ID number)
    compatible: str | None = None


class Upload(_M):
    baseline: Literal["trailing_mean"]
    baseline_days: int = Field(ge=1, le=366)
    expected: dict[str, float]


class Identifiers(_M):
    id_number_system: str
    org_system_pattern: str


class Institution(_M):
    about: str | None = Field(None, alias="_about")
    direct: dict[str, list[str]]
    via: list[str]


#: the dimensions whose findings a corrected resubmission can fix: each gets a Task by default
ASSIGNED_DIMENSIONS = ("completeness", "conformance", "consistency", "uniqueness")


class TaskPolicy(_M):
    """Which findings are assigned to their institution as a FHIR Task: those of these dimensions.
    A timeliness finding records that a record came in late, which no resubmission can change (a
    resubmission is received later still): it is counted and listed, not assigned as work that
    could never be completed."""

    about: str | None = Field(None, alias="_about")
    dimensions: list[Literal["completeness", "conformance", "consistency", "timeliness", "uniqueness"]] = Field(
        default_factory=lambda: list(ASSIGNED_DIMENSIONS))


class RulesFile(_M):
    about: str | None = Field(None, alias="_about")
    version: str
    threshold: float = Field(gt=0, le=1)
    timezone_offset_hours: float
    identifiers: Identifiers
    institution: Institution
    completeness: list[Required]
    conformance: Conformance
    consistency: Consistency
    timeliness: Timeliness
    uniqueness: dict[str, UniqueKey]
    upload: Upload
    tasks: TaskPolicy = Field(default_factory=TaskPolicy)


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    dimension: str
    resource: str
    path: str
    title: str


class Rules:
    """The validated rules and the catalogue of concrete rule ids."""

    def __init__(self, f: RulesFile) -> None:
        self.f = f
        self.version = f.version
        self.threshold = f.threshold
        cat: list[RuleInfo] = []
        for r in f.completeness:
            cat.append(RuleInfo(required_id(r), "completeness", r.resource, r.path, f"{r.title}缺失"))
        c = f.conformance
        for x in c.id_number:
            cat.append(RuleInfo(f"conformance.{x.resource}.id-number", "conformance", x.resource, "identifier",
                                "身份证件号码不符合 GB 11643"))
        for t in c.phone.resources:
            cat.append(RuleInfo(f"conformance.{t}.phone", "conformance", t, "telecom", "电话号码格式错误"))
        for t in c.placeholder_name.resources:
            cat.append(RuleInfo(f"conformance.{t}.placeholder-name", "conformance", t, "name",
                                "姓名为占位名（某某之子/之女）"))
        for t in c.traditional_name.resources:
            cat.append(RuleInfo(f"conformance.{t}.traditional-name", "conformance", t, "name", "姓名使用繁体字"))
        for b in c.bindings:
            path = f"extension('{b.extension}').{b.path}" if b.extension else b.path
            cat.append(RuleInfo(f"conformance.{b.resource}.{b.id}", "conformance", b.resource, path,
                                f"{b.title}：代码不在值集内"))
        k = f.consistency
        for t in k.id_sex.resources:
            cat.append(RuleInfo(f"consistency.{t}.id-sex", "consistency", t, "gender", "性别与身份证号不符"))
        for t in k.id_birthdate.resources:
            cat.append(RuleInfo(f"consistency.{t}.id-birthdate", "consistency", t, "birthDate",
                                "出生日期与身份证号不符"))
        for d in k.date_order:
            cat.append(RuleInfo(date_order_id(d), "consistency", d.resource, d.later, d.title))
        for t, paths in k.event_in_life.event.items():
            cat.append(RuleInfo(f"consistency.{t}.event-in-life", "consistency", t, paths[0],
                                "事件日期早于出生或晚于死亡"))
        for s in k.sex_for_code:
            cat.append(RuleInfo(f"consistency.{s.resource}.{s.id}", "consistency", s.resource, s.path, s.title))
        cat.append(RuleInfo("consistency.Observation.vital-range", "consistency", "Observation", "value",
                            "生命体征/检验值超出合理范围"))
        for fld in k.registry.fields if k.registry else ():
            cat.append(RuleInfo(registry_id(fld), "consistency", "Patient", REGISTRY_PATHS[fld],
                                f"{REGISTRY_TITLES[fld]}与全员人口库不一致"))
        for t in f.timeliness.event:
            cat.append(RuleInfo(f"timeliness.{t}", "timeliness", t, "meta.lastUpdated", "上传不及时"))
        for t in f.timeliness.registrations.types if f.timeliness.registrations else ():
            cat.append(RuleInfo(f"timeliness.{t}", "timeliness", t, "meta.lastUpdated",
                                "登记上传不及时（随迟报的就诊记录一并上传）"))
        for t, u in f.uniqueness.items():
            cat.append(RuleInfo(f"uniqueness.{t}", "uniqueness", t, "id", u.about or "重复记录"))
        cat.append(RuleInfo("upload.rate", "upload", "Organization", "", "上传量低于预期"))
        ids = [r.id for r in cat]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise RulesError(f"rule ids must be unique; repeated: {', '.join(sorted(dup))}")
        self.catalogue: dict[str, RuleInfo] = {r.id: r for r in cat}
        self.task_dimensions: frozenset[str] = frozenset(f.tasks.dimensions)

    def dimension(self, rule: str) -> str:
        """The dimension of a rule id (its first part when the catalogue does not know it)."""
        info = self.catalogue.get(rule)
        return info.dimension if info else rule.split(".", 1)[0]

    def assigned(self, rule: str) -> bool:
        """Does a finding of ``rule`` get a Task (its dimension is one the ``tasks`` policy names)?"""
        return self.dimension(rule) in self.task_dimensions


REGISTRY_PATHS = {"name": "name", "phone": "telecom", "address": "address"}
REGISTRY_TITLES = {"name": "姓名", "phone": "联系电话", "address": "现住址"}


def registry_id(field: str) -> str:
    return f"consistency.Patient.registry-{field}"


def required_id(r: Required) -> str:
    return f"completeness.{r.resource}.{r.path}"


def date_order_id(d: DateOrder) -> str:
    return f"consistency.{d.resource}.{d.earlier}-before-{d.later}"


def parse(raw: bytes | str, source: str = "rules") -> Rules:
    """Validate a rules document; errors name the offending entry."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RulesError(f"{source}: not valid JSON: {e}") from None
    try:
        return Rules(RulesFile.model_validate(doc))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors()[:5])
        raise RulesError(f"{source}: {errs}") from None


@cache
def load(path: str | None = None) -> Rules:
    """The rules shipped with phip (or those at ``path``)."""
    p = Path(path) if path else DATA / "rules.json"
    return parse(p.read_bytes(), str(p))
