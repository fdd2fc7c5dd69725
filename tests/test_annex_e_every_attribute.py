"""Every attribute of Table E.1-1 gets its action, at the top level and inside sequences.

A data set holding every attribute the table lists (a value of the right VR for each) is
de-identified; each attribute is then checked against its action code under the options in
force. The table is the standard's; nothing here lists attributes by hand.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from uploader.deid.engine import Settings, deidentify, patient_key
from uploader.deid.iod import path_key, requirements
from uploader.deid.profile import Op, Option, Profile, load_table, resolve
from uploader.deid.pseudonyms import Pseudonymiser

from .conftest import KEY

PATIENT = "DOE^JOHN"
NAMED = "Seen by DOE"  # a value carrying the patient's name, for C (clean) attributes
SAMPLE: dict[str, Any] = {
    "PN": "OTHER^PERSON",
    "DA": "20200102",
    "TM": "101010",
    "DT": "20200102101010",
    "AS": "042Y",
    "DS": "1.5",
    "IS": "7",
    "US": 1,
    "SS": 1,
    "UL": 1,
    "SL": 1,
    "SV": 1,
    "UV": 1,
    "FL": 1.0,
    "FD": 1.0,
    "AT": 0x00100010,
    "UR": "http://example.org/x",
}
BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
# (0002,xxxx) are file meta, handled with the file meta; (0000,xxxx) are command elements.
SKIP_GROUPS = {0x0000, 0x0002}


def _rows() -> list[dict[str, Any]]:
    rows = []
    for row in load_table()["attributes"]:
        tag = row["tag"]
        if "x" in tag.lower() or "g" in tag or not tag.startswith("("):
            continue
        value = int(tag[1:5] + tag[6:10], 16)
        if value >> 16 in SKIP_GROUPS:
            continue
        rows.append({**row, "value": value})
    return rows


ROWS = _rows()


def _vr(tag: int) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"  # newer than pydicom's dictionary
    return vr.split(" or ", maxsplit=1)[0]


_LETTERS = str.maketrans("0123456789", "GHIJKLMNOP")


def _value(tag: int, vr: str, code: str) -> Any:
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "T-D0050"
        return [item]
    if vr == "UI":
        return f"1.2.826.0.1.3680043.9.7133.777.{tag}"
    if vr in BINARY:
        return b"\x01\x02"
    if vr in SAMPLE:
        return SAMPLE[vr]
    # unique, and no digits: never equal to an identifier nor shaped like one (an ID, a date)
    return NAMED if "C" in code else "S" + f"{tag:08X}".translate(_LETTERS)


def _dataset(profile: Profile) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    for row in ROWS:
        tag = row["value"]
        vr = _vr(tag)
        code = profile.rules[tag].code_for(profile.options)
        ds[tag] = DataElement(tag, vr, _value(tag, vr, code))
    ds.PatientName = PATIENT
    ds.PatientID = "123456"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7133.777.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.7133.777.2"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # the same attributes again, inside an item of a sequence the table does not list
    # (kept and walked), minus the patient module the header rewrites
    nested = Dataset()
    for row in ROWS:
        tag = row["value"]
        if tag >> 16 not in (0x0010, 0x0012) and tag != 0x00080005:
            nested[tag] = copy.deepcopy(ds[tag])
    ds.StructureSetROISequence = [nested]
    return ds


def _check(before: DataElement, after: DataElement | None, op: Op, where: str) -> str | None:
    value = None if after is None else after.value
    original = before.value
    if op is Op.REMOVE:
        return None if after is None else f"{where}: X but present"
    if op is Op.EMPTY:
        return None if value in (None, "", b"", []) else f"{where}: Z but holds a value"
    if op in (Op.DUMMY, Op.UID):
        if before.VR == "SQ":
            return None if after is not None else f"{where}: sequence lost"
        if op is Op.UID and value is not None and not str(value).startswith("2.25."):
            return f"{where}: U but not remapped"
        return None if value != original else f"{where}: {op.name} but unchanged"
    if op is Op.SHIFT and before.VR == "TM":
        return None if value == original else f"{where}: a time of day should be kept"
    if op is Op.SHIFT:
        return None if value != original and value else f"{where}: C (shift) but unchanged"
    if op is Op.CLEAN and isinstance(original, str) and "DOE" in original:
        return None if "DOE" not in str(value) else f"{where}: C but the name is still there"
    if op in (Op.KEEP, Op.RECURSE) and after is None:
        return f"{where}: K but removed"
    if op is Op.KEEP and before.VR not in ("PN",) and value != original:
        return f"{where}: K but changed"
    return None


CT_REQUIRED = requirements("1.2.840.10008.5.1.4.1.1.2") or {}

# Attributes the uploader writes itself after the profile (pseudonyms, the record, the trial).
WRITTEN = {0x00100010, 0x00100020, 0x00104000, 0x00120062, 0x00120063, 0x00120064}

OPTION_SETS = [
    frozenset(),
    frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS}),
    frozenset(Option),
    *[frozenset({o}) for o in Option],
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda s: "+".join(sorted(s)) or "basic")
def test_every_table_attribute_gets_its_action_at_any_depth(options: frozenset[Option]) -> None:
    profile = Profile(load_table(), options)
    settings = Settings(profile=profile, pseudonymiser=Pseudonymiser(KEY), site="S1")
    ds = _dataset(profile)
    before = copy.deepcopy(ds)
    deidentify(ds, settings)
    problems = []
    checked = 0
    for row in ROWS:
        tag = row["value"]
        if tag in WRITTEN or tag >> 16 == 0x0012:
            continue
        elem = before[tag]
        code = profile.rules[tag].code_for(options)
        vr = elem.VR if elem.VR != "UN" else "UN"
        # conditional codes follow the CT IOD's requirement where the attribute sits
        op = resolve(code, vr, CT_REQUIRED.get(path_key((), tag), "3"))
        problems.append(_check(elem, ds.get(tag), op, f"{row['tag']} {row['name']}"))
        checked += 1
        if tag in before.StructureSetROISequence[0]:
            inner_after = ds.StructureSetROISequence[0].get(tag)
            inner = before.StructureSetROISequence[0][tag]
            op = resolve(code, vr, CT_REQUIRED.get(path_key((0x30060020,), tag), "3"))
            problems.append(_check(inner, inner_after, op, f"nested {row['tag']} {row['name']}"))
    assert checked > 600
    bad = [p for p in problems if p]
    assert bad == [], "\n".join(bad)


def test_table_is_the_2024b_or_later_edition_with_all_rows() -> None:
    table = load_table()
    assert table["edition"] >= "2024b"
    assert len(table["attributes"]) == table["tables"]["E.1-1"] > 600
    codes = {row["basic"] for row in table["attributes"]}
    assert codes <= {"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
    assert len(table["safe_private"]) > 400


def test_modified_dates_option_shifts_dates_by_the_patient_offset() -> None:
    profile = Profile(load_table(), frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    pseudo = Pseudonymiser(KEY)
    ds = _dataset(profile)
    shift = pseudo.date_shift_days(patient_key(ds))
    deidentify(ds, Settings(profile=profile, pseudonymiser=pseudo))
    expected = (dt.date(2020, 1, 2) + dt.timedelta(days=shift)).strftime("%Y%m%d")
    assert ds.StudyDate == expected
    assert ds.AcquisitionDateTime == expected + "101010"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
