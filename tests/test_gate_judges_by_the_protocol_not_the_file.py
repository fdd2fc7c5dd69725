"""The gate's rules without a server: the protocol decides (not what the file declares), UIDs
must be of the form the identifiable node derives, pseudonyms must follow the trial's pattern."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from anonymised_node.gate import Announced, Gate, _uid_problem, pseudonym_problem
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.protocols.loader import load_protocol

from .conftest import EXAMPLE_PROTOCOL, KEY
from .gate_variants import Study, declares_retain_uids, make_study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    tmp = tmp_path_factory.mktemp("gate-rules")
    (tmp / "site.key").write_text(KEY.hex())
    return make_study(tmp, tmp / "site.key")


def test_every_uid_the_identifiable_node_derives_passes_and_scanners_2_25_uids_do_not() -> None:
    pseudo = Pseudonymiser(KEY)
    for n in range(500):
        assert _uid_problem(0x00080018, pseudo.uid(f"1.2.3.{n}"), False) is None
    refused = [_uid_problem(0x00080018, f"2.25.{uuid.uuid4().int}", False) for _ in range(200)]
    assert all(p is not None and "not a derived one" in p for p in refused)
    assert _uid_problem(0x00080018, f"2.25.{uuid.uuid1().int}", False) is not None
    for root in ("1.2.840.113619.2.55.3", "1.3.12.2.1107.5.1.4", "1.2.246.352.71.2"):
        assert "equipment maker" in str(_uid_problem(0x0020000D, root + ".1", False))
    assert _uid_problem(0x00080016, "1.2.840.10008.5.1.4.1.1.2", False) is None  # a class UID
    assert _uid_problem(0x0020000D, "1.2.840.113619.2.55.3.1", True) is None  # retain_uids


def test_pseudonyms_must_follow_the_trial_pattern() -> None:
    protocol = load_protocol(EXAMPLE_PROTOCOL)
    assert pseudonym_problem(protocol, "PACE-C-RXH-DOKZQF", "PACE-C-RXH-DOKZQF_GTST") is None
    assert pseudonym_problem(protocol, "9434765919", "9434765919_GTST") is not None
    assert pseudonym_problem(protocol, "PACE-C-RXH-dokzqf", "x") is not None  # not base32
    assert pseudonym_problem(protocol, "PACE-C-RXH-DOKZQF", "OTHER_GTST") is not None


def test_a_protocol_that_retains_uids_is_what_lets_original_uids_through(
    tmp_path: Path, study: Study
) -> None:
    (data,), doc, _kind = declares_retain_uids(study)
    from io import BytesIO

    from pydicom import dcmread

    ds = dcmread(BytesIO(data))
    announced = Announced(
        doc["study_uid"], "PACE-C", doc["subject"], doc["session"],
        frozenset(doc["sop_instance_uids"]),
    )  # fmt: skip
    strict = Gate({"PACE-C": load_protocol(EXAMPLE_PROTOCOL)})
    assert any("does not allow" in p for p in strict.judge(ds, announced))
    assert any("equipment maker" in p for p in strict.judge(ds, announced))
    text = EXAMPLE_PROTOCOL.read_text().replace(
        "    - clean_descriptors", "    - clean_descriptors\n    - retain_uids"
    )
    (tmp_path / "retain.yaml").write_text(text)
    lenient = Gate({"PACE-C": load_protocol(tmp_path / "retain.yaml")})
    assert lenient.judge(ds, announced) == []  # the protocol allows it: not the file


@pytest.mark.parametrize("code", ["113110", "113111", "999999"])
def test_a_declared_option_outside_the_protocol_is_a_refusal(study: Study, code: str) -> None:
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    from .intake_client import manifest_for

    ds = dcmread(study.deid[0])
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", "an option"
    ds.DeidentificationMethodCodeSequence.append(item)
    doc = manifest_for(study.deid)
    announced = Announced(
        doc["study_uid"], "PACE-C", doc["subject"], doc["session"],
        frozenset(doc["sop_instance_uids"]),
    )  # fmt: skip
    problems = Gate({"PACE-C": load_protocol(EXAMPLE_PROTOCOL)}).judge(ds, announced)
    assert problems == [
        "DeidentificationMethodCodeSequence[4].(0008,0100) CodeValue:"
        " declares an option the trial's protocol does not allow"
    ]
