"""The [terminology] table of phip.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from phip.node.config import NodeError
from phip.terminology.settings import TerminologySettings


def test_defaults_and_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHIP_TERMINOLOGY_ON_INIT", raising=False)  # the suite's conftest sets it
    s = TerminologySettings.from_dict({})
    assert (s.strictness, s.load_on_init, s.map_local, s.profiles) == ("warn", True, True, {})
    s = TerminologySettings.from_dict({"strictness": "reject", "load_on_init": False,
                                       "profiles": {"Patient": "urn:phip:sd:cn-patient"}})
    assert s.strictness == "reject" and not s.load_on_init and s.profiles == {"Patient": ["urn:phip:sd:cn-patient"]}
    with pytest.raises(NodeError, match="strictness"):
        TerminologySettings.from_dict({"strictness": "lenient"})
    with pytest.raises(NodeError, match="profiles"):
        TerminologySettings.from_dict({"profiles": ["urn:phip:sd:cn-patient"]})


def test_read_from_the_node_folder(tmp_path: Path) -> None:
    (tmp_path / "phip.toml").write_text('[node]\nname = "x"\n\n[terminology]\nstrictness = "off"\n\n'
                                        '[terminology.profiles]\nPatient = ["urn:phip:sd:cn-patient"]\n')

    class FakeNode:
        data = tmp_path

    s = TerminologySettings.from_node(FakeNode())
    assert s.strictness == "off" and s.profiles == {"Patient": ["urn:phip:sd:cn-patient"]}


def test_strictness_from_phip_toml_applies_to_writes(tmp_path: Path) -> None:
    from phip.fhir.errors import FhirError
    from phip.node.node import Node, init_node
    from tests.terminology.conftest import cn_patient

    init_node(tmp_path / "n", region="510104").close()
    with (tmp_path / "n" / "phip.toml").open("a") as f:
        f.write('\n[terminology]\nstrictness = "reject"\n')
    node = Node.open(tmp_path / "n")
    try:
        repo = node.store.repository()
        with pytest.raises(FhirError) as e:
            repo.create("Patient", cn_patient("130402198207290622"))
        assert e.value.status == 422
        assert repo.create("Patient", cn_patient()).status == 201
    finally:
        node.close()
