"""A newborn's birth-hospital placeholder (「母亲之子」 under the mother's ID number) is linked to the
child's own registration through the mother's contact data — and never when it could be a twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .builders import P, rid
from .test_batch import _import
from .test_linking import assurance, person_of

HOME = ("510104", "建设街道安源社区新华路9号")
MOTHER_ID = rid("510104", "1990-07-23", 372)
BORN = "2025-05-18"


def mother(pid: str = "m") -> P:
    return (P("周璐萌", family="周", given="璐萌").id(pid).born("1990-07-23").sex("female").idno(MOTHER_ID)
            .phone("15400003333").addr(*HOME))


def placeholder(pid: str, sex: str = "male", name: str = "周璐萌之子") -> P:
    return P(name).id(pid).born(BORN).sex(sex).idno(MOTHER_ID).mrn("510104-fybjy", pid)


def child(pid: str, given: str, seq: int, sex: str = "male", phone: str = "15400003333") -> P:
    """The child's own registration: own name and number, the mother's phone, the home address."""
    return (P("李" + given, family="李", given=given).id(pid).born(BORN).sex(sex).idno(rid("510104", BORN, seq))
            .phone(phone).addr(*HOME))


def put(api: Any, p: P) -> str:
    doc = p.build()
    api.put(f"/fhir/Patient/{doc['id']}", doc, expect=201)
    return str(doc["id"])


def open_reviews(api: Any) -> list[dict[str, Any]]:
    return [{k: str(v).removeprefix("Patient/") for k, v in i.items()}
            for i in api.get("/fhir/empi/review").json()["items"]]


def test_placeholder_then_childs_own_registration_is_one_person(api: Any) -> None:
    put(api, mother())
    put(api, placeholder("nb"))
    put(api, child("c1", "浩然", 11))
    person = person_of(api, "c1")
    assert person["id"] == person_of(api, "nb")["id"] != person_of(api, "m")["id"]
    assert assurance(person, "c1") == "level3"  # probabilistic, through the mother
    # the golden record is the child's, not the placeholder's nor the mother's
    assert person["name"][0]["text"] == "李浩然"
    assert person["identifier"][0]["value"] == rid("510104", BORN, 11)
    # a later record of the child joins the same Person
    put(api, child("c2", "浩然", 11).mrn("510104-sqws", "88"))
    assert person_of(api, "c2")["id"] == person["id"]


def test_childs_registration_first_then_placeholder(api: Any) -> None:
    put(api, mother())
    put(api, child("c1", "浩然", 11))
    put(api, placeholder("nb"))
    assert person_of(api, "nb")["id"] == person_of(api, "c1")["id"]
    assert person_of(api, "m")["id"] != person_of(api, "c1")["id"]


def test_no_household_evidence_no_link(api: Any) -> None:
    put(api, mother())
    put(api, placeholder("nb"))
    # same birth date and sex, but another family's phone and address: a stranger born that day
    stranger = (P("王浩", family="王", given="浩").id("s").born(BORN).sex("male").idno(rid("510104", BORN, 15))
                .phone("15400009999").addr("510104", "人民南路4号"))
    put(api, stranger)
    assert person_of(api, "s")["id"] != person_of(api, "nb")["id"]


def test_mother_must_be_confirmed_by_the_placeholders_name(api: Any) -> None:
    put(api, mother())
    # a placeholder naming another mother while carrying this number (a typing slip): not trusted
    put(api, placeholder("nb", name="赵敏之子"))
    put(api, child("c1", "浩然", 11))
    assert person_of(api, "nb")["id"] != person_of(api, "c1")["id"]


def test_same_sex_twin_placeholders_are_never_auto_linked(api: Any) -> None:
    put(api, mother())
    put(api, placeholder("nb1"))
    put(api, placeholder("nb2"))
    put(api, child("c1", "浩然", 11))
    put(api, child("c2", "浩宇", 13))
    persons = {person_of(api, x)["id"] for x in ("m", "nb1", "nb2", "c1", "c2")}
    assert len(persons) == 5
    # ... but they are put before a person
    pairs = {frozenset((i["patient"], i["candidate"])) for i in open_reviews(api)}
    assert frozenset(("c1", "nb1")) in pairs or frozenset(("c1", "nb2")) in pairs


def test_one_placeholder_two_registered_twins_goes_to_review(api: Any) -> None:
    put(api, mother())
    put(api, child("c1", "浩然", 11))
    put(api, child("c2", "浩宇", 13))
    put(api, placeholder("nb"))
    persons = {person_of(api, x)["id"] for x in ("nb", "c1", "c2")}
    assert len(persons) == 3
    assert any(i["patient"] == "nb" for i in open_reviews(api))


def test_twin_registered_after_the_link_is_not_merged_in(api: Any) -> None:
    put(api, mother())
    put(api, placeholder("nb"))
    put(api, child("c1", "浩然", 11))
    put(api, child("c2", "浩宇", 13))  # the twin nobody knew of
    assert person_of(api, "nb")["id"] == person_of(api, "c1")["id"] != person_of(api, "c2")["id"]


def test_batch_import_and_rebuild_link_the_placeholder(api: Any, node: Any, tmp_path: Path) -> None:
    from phip.empi.batch import rebuild

    twins_mother = rid("510104", "1988-02-02", 246)
    tm = (P("孙丽", family="孙", given="丽").id("tm").born("1988-02-02").sex("female").idno(twins_mother)
          .phone("15400004444").addr("510104", "新华路11号"))
    t_ph = [P("孙丽之女").id(f"tp{i}").born(BORN).sex("female").idno(twins_mother).build() for i in (1, 2)]
    t_kids = [(P("刘" + g, family="刘", given=g).id(f"tk{i}").born(BORN).sex("female")
               .idno(rid("510104", BORN, s)).phone("15400004444").addr("510104", "新华路11号").build())
              for i, (g, s) in enumerate((("欣怡", 22), ("欣悦", 24)), 1)]
    _import(node, [mother().build(), placeholder("nb").build(), tm.build(), *t_ph], tmp_path)
    _import(node, [child("c1", "浩然", 11).build(), *t_kids], tmp_path)  # the children come later
    assert person_of(api, "nb")["id"] == person_of(api, "c1")["id"] != person_of(api, "m")["id"]
    assert len({person_of(api, x)["id"] for x in ("tm", "tp1", "tp2", "tk1", "tk2")}) == 5
    rebuild(node.ext["empi"])
    assert person_of(api, "nb")["id"] == person_of(api, "c1")["id"] != person_of(api, "m")["id"]
    assert len({person_of(api, x)["id"] for x in ("tm", "tp1", "tp2", "tk1", "tk2")}) == 5
