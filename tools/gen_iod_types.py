"""Generate uploader/deid/data/iod_types.json: which Annex E attributes each IOD requires.

The engine needs to know, for the conditional action codes (X/Z, X/D, X/Z/D, Z/D), whether an
attribute is Type 1 or 2 where it sits in its IOD, so that de-identification never removes what
the IOD requires. The requirements come from the module and IOD templates of David Clunie's
dicom3tools (the tables its dciodvfy checks files against), never from a hand-typed list.

Usage:
  python tools/gen_iod_types.py --from-dicom3tools DIR   # DIR: dicom3tools' libsrc/standard
  python tools/gen_iod_types.py [--check]                 # TSV -> JSON (--check: compare only)

The first form rewrites tools/iod/requirements.tsv (kept in the repository with its provenance);
the second builds the packaged JSON from it.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TSV = ROOT / "tools" / "iod" / "requirements.tsv"
OUT = ROOT / "uploader" / "deid" / "data" / "iod_types.json"
ANNEX_E = ROOT / "uploader" / "deid" / "data" / "annex_e.json"
PROVENANCE = ROOT / "tools" / "iod" / "SOURCE"
_KV = re.compile(r'(\w+)="([^"]*)"')
_REQUIRED = ("1", "1C", "2", "2C")


def _lines(folder: Path, sub: str) -> list[dict[str, str]]:
    out = []
    for path in sorted((folder / sub).glob("*.tpl")):
        for raw in path.read_text("latin-1").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line:
                fields = dict(_KV.findall(line))
                fields["_end"] = line if not fields else ""
                out.append(fields)
    return out


def _blocks(lines: list[dict[str, str]], start: str, end: str) -> dict[str, list[dict[str, str]]]:
    blocks: dict[str, list[dict[str, str]]] = {}
    current: list[dict[str, str]] | None = None
    for f in lines:
        if start in f and current is None:
            current = blocks.setdefault(f[start], [])
        elif f["_end"] == end:
            current = None
        elif current is not None:
            current.append(f)
    return blocks


def _extract(folder: Path) -> list[tuple[str, str, str, str]]:
    from pydicom.datadict import tag_for_keyword
    from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

    module_lines = _lines(folder, "module")
    modules = _blocks(module_lines, "Module", "ModuleEnd")
    macros = _blocks(module_lines, "DefineMacro", "MacroEnd")
    iods = _blocks(_lines(folder, "iodcomp"), "CompositeIOD", "CompositeIODEnd")
    conditions = _blocks(_lines(folder, "."), "Condition", "ConditionEnd")
    by_keyword = {v[4]: uid for uid, v in UID_dictionary.items()}
    listed = {
        r["tag"].strip("()").replace(",", "")
        for r in json.loads(ANNEX_E.read_text())["attributes"]
        if any("/" in code for code in (r["basic"], *r["options"].values()))
    }
    rows: set[tuple[str, str, str, str]] = set()

    def visit(entries: list[dict[str, str]], prefix: str, iod: str, sops: str, depth: int) -> None:
        stack = [prefix]
        for f in entries:
            if "InvokeMacro" in f and depth < 12:
                visit(macros.get(f["InvokeMacro"], []), stack[-1], iod, sops, depth + 1)
            elif "Sequence" in f or "Name" in f:
                keyword = f.get("Sequence") or f["Name"]
                tag = tag_for_keyword(keyword)
                if tag is None:
                    if "Sequence" in f:
                        stack.append(stack[-1] + "?/")
                    continue
                hexed = f"{tag:08X}"
                if hexed in listed and f.get("Type", "3") in _REQUIRED:
                    rows.add((iod, sops, stack[-1] + hexed, f["Type"]))
                if "Sequence" in f:
                    stack.append(stack[-1] + hexed + "/")
            elif f["_end"] == "SequenceEnd" and len(stack) > 1:
                stack.pop()

    for iod, entries in iods.items():
        sop_uids = []
        for c in conditions.get(_iod_condition(folder, iod), []):
            name = c.get("StringConstantFromRootAttribute", "")
            uid = by_keyword.get(name.removesuffix("SOPClassUID"))
            if c.get("Element") == "SOPClassUID" and uid:
                sop_uids.append(uid)
        if not sop_uids:
            continue
        sops = " ".join(sorted(set(sop_uids)))
        for e in entries:
            if "Module" in e:
                visit(modules.get(e["Module"], []), "", iod, sops, 0)
    return sorted(rows)


def _iod_condition(folder: Path, iod: str) -> str:
    for path in (folder / "iodcomp").glob("*.tpl"):
        text = path.read_text("latin-1")
        m = re.search(rf'CompositeIOD="{re.escape(iod)}"\s+Condition="(\w+)"', text)
        if m:
            return m.group(1)
    return ""


def write_tsv(folder: Path) -> None:
    rows = _extract(folder)
    with TSV.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["iod", "sop_classes", "path", "type"])
        w.writerows(rows)
    print(f"{TSV.relative_to(ROOT)}: {len(rows)} rows")


def build() -> dict[str, object]:
    iods: dict[str, dict[str, str]] = {}
    sops: dict[str, str] = {}
    with TSV.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            iods.setdefault(row["iod"], {})[row["path"]] = row["type"]
            for uid in row["sop_classes"].split():
                sops[uid] = row["iod"]
    return {
        "source": PROVENANCE.read_text("utf-8").strip(),
        "sop_classes": dict(sorted(sops.items())),
        "iods": {k: dict(sorted(v.items())) for k, v in sorted(iods.items())},
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["--from-dicom3tools"] and len(argv) == 2:
        write_tsv(Path(argv[1]))
        return 0
    text = json.dumps(build(), indent=0, sort_keys=False) + "\n"
    if argv == ["--check"]:
        if not OUT.exists() or OUT.read_text("utf-8") != text:
            out = OUT.relative_to(ROOT)
            print(f"{out} is out of date: run tools/gen_iod_types.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, "utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
