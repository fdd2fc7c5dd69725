"""Generate uploader/protocols/data/tg263.json from tools/tg263 (the AAPM TG-263 worksheet).

Usage: python tools/gen_tg263.py [--check]
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

VERSION = "v20170815"
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tools" / "tg263" / f"tg263_{VERSION}.tsv"
OUT = ROOT / "uploader" / "protocols" / "data" / "tg263.json"


def build() -> dict[str, object]:
    with SRC.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    names = [
        {
            k: row[k]
            for k in ("name", "reverse_name", "type", "major_category", "minor_category", "fmaid")
        }
        for row in rows
        if "xx" not in row["name"] and not row["name"].startswith("*")  # patterns, not names
    ]
    patterns = [_regex(row["name"]) for row in rows if "xx" in row["name"]]
    return {
        "nomenclature": "AAPM TG-263",
        "version": VERSION,
        "source": "TG263_Nomenclature_Worksheet_20170815.xls (AAPM Report 263); see tools/tg263",
        "rows_in_source": len(rows),
        "names": names,
        "patterns": patterns,  # the worksheet's templates, e.g. SpinalCord_PRVxx -> _PRV05
    }


def _regex(template: str) -> str:
    """Turn a worksheet template (xx digits) into an anchored regular expression."""
    parts = re.split(r"(x{2,4})", template)
    out = "".join(
        (r"\d{2}" if p == "xx" else r"\d{3,4}") if p and set(p) == {"x"} else re.escape(p)
        for p in parts
    )
    return f"^{out}$"


def main() -> int:
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("tg263.json is up to date" if same else "tg263.json differs: run the generator")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
