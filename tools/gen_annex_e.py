"""Generate uploader/deid/data/annex_e.json from the standard's Annex E tables (tools/annex_e).

Usage: python tools/gen_annex_e.py [--check]
With --check, exit 1 if the packaged JSON differs from what the TSVs generate.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

EDITION = "2026d"
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tools" / "annex_e"
OUT = ROOT / "uploader" / "deid" / "data" / "annex_e.json"
OPTION_COLUMNS = {
    "safe_private": "retain_safe_private",
    "uids": "retain_uids",
    "device": "retain_device_identity",
    "institution": "retain_institution_identity",
    "patient_chars": "retain_patient_characteristics",
    "long_full_dates": "retain_longitudinal_full_dates",
    "long_modified_dates": "retain_longitudinal_modified_dates",
    "clean_desc": "clean_descriptors",
    "clean_struct": "clean_structured_content",
    "clean_graph": "clean_graphics",
}


def _rows(name: str) -> list[dict[str, str]]:
    with (SRC / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def build() -> dict[str, object]:
    attributes = []
    for row in _rows(f"e1_1_{EDITION}.tsv"):
        options = {opt: row[col] for col, opt in OPTION_COLUMNS.items() if row[col]}
        attributes.append(
            {"tag": row["tag"], "name": row["name"], "basic": row["basic"], "options": options}
        )
    safe = []
    for row in _rows(f"e3_10_1_{EDITION}.tsv"):
        tag = row["tag"].strip("()")
        group, element = tag.split(",")
        safe.append(
            {
                "group": group.upper(),
                "element": element[-2:].upper(),
                "creator": row["creator"],
                "vr": row["vr"],
                "meaning": row["meaning"],
                "condition": row["condition"],
            }
        )
    return {
        "standard": "DICOM PS3.15",
        "edition": EDITION,
        "tables": {"E.1-1": len(attributes), "E.3.10-1": len(safe)},
        "source": "tools/annex_e (see its README for provenance)",
        "attributes": attributes,
        "safe_private": safe,
    }


def main() -> int:
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("annex_e.json is up to date" if same else "annex_e.json differs: run the generator")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {EDITION}, {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
