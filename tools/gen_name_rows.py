"""Write the person-name rows without a title into uploader/deid/data/patterns.json.

Usage: python tools/gen_name_rows.py [--check]

Their regular expressions are built here from named parts (letters with accents, a word in
title case or capitals, the separators, the name particles) rather than typed out, and replace
the rows of the same check in the table; every other row stays as it is. The checks that judge
what these rows find are in uploader/deid/names.py. CI checks the table agrees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "uploader" / "deid" / "data" / "patterns.json"

UPPER = "A-Z\u00c0-\u00d6\u00d8-\u00de"  # capitals, Latin-1 accented ones too
LOWER = "a-z\u00df-\u00f6\u00f8-\u00ff"
JOIN = "'\u2019\\-"  # O'Neill, D\u2019Souza, Smith-Jones
#: A word in title case (Patel, O'Neill, McDonald, Smith-Jones) or in capitals (PATEL, O'NEILL).
TITLE = f"(?:[{UPPER}][{JOIN}])?[{UPPER}][{LOWER}]+(?:[{JOIN}]?[{UPPER}][{LOWER}]+)*"
CAPS = f"[{UPPER}]+(?:[{JOIN}][{UPPER}]+)*"
WORD = f"(?:{TITLE}|{CAPS})"
END = f"(?![{UPPER}{LOWER}0-9{JOIN}])"
START = f"(?<![{UPPER}{LOWER}0-9{JOIN}.^])"
SEP = "[ \\t_]+"
#: Words after which capitalised words are a person: who did the work, and relatives, carers.
CUES = "under|Under|UNDER|attn|Attn|ATTN|c/o|C/O|by|By|BY"
KIN = (
    "wife|Wife|WIFE|husband|Husband|HUSBAND|partner|spouse|son|daughter|mother|father|brother|"
    "carer|Carer|guardian|NOK|nok|Nok|next of kin|Next of kin|NEXT OF KIN"
)
#: A token of a name: an initial, a particle, or a capitalised word (glued initials too).
NAMEISH = (
    "(?:[A-Z\\u00c0-\\u00de]\\.|(?:de|van|von|der|den|da|di|du|le|la|del|della|dos|ter)"
    "|[A-Z\\u00c0-\\u00de][A-Za-z\\u00c0-\\u00ff'\\u2019\\-]{0,40})"
)
PARTICLES = (
    "(?:(?:de|van|von|der|den|da|di|du|le|la|del|della|dos|das|bin|al|el|ter|ten)[ \\t]+){0,2}"
)


def rows() -> list[dict[str, object]]:
    """The rows, in table order; each candidate is a lookahead so that candidates overlap."""
    name = "person name"
    return [
        {
            "kind": name,
            "name": "given name and surname (John Patel, JOHN PATEL, Sarah A. Connolly, "
            "Pieter de Vries; not Mark Lesion)",
            "case": "sensitive",
            "check": "given_surname",
            "regex": f"{START}(?=(?P<value>{WORD}(?:{SEP}[{UPPER}]\\.?)?{SEP}{PARTICLES}{WORD}"
            f"{END}))",
        },
        {
            "kind": name,
            "name": "surname, given name (PATEL, JOHN; Patel, John A)",
            "case": "sensitive",
            "check": "surname_comma_given",
            "regex": f"{START}(?=(?P<value>{WORD}[ \\t]*,[ \\t]*{WORD}{END}))",
        },
        {
            "kind": name,
            "name": "initial and surname (J. Patel, J.A. Patel, J Patel; not T Spine, X Ray)",
            "case": "sensitive",
            "check": "initial_surname",
            "regex": f"{START}(?=(?P<value>[{UPPER}](?:\\.[{UPPER}]\\.[ \\t]*|\\.[ \\t]*|[ \\t]+)"
            f"{WORD}{END}))",
        },
        {
            "kind": name,
            "name": "a capitalised word after by (checked by Patel; not by Hand, by Eclipse)",
            "case": "sensitive",
            "check": "after_by",
            "regex": f"(?<![{UPPER}{LOWER}0-9])(?:by|By|BY)[ \\t]+(?P<value>{TITLE}){END}",
        },
        {
            "kind": name,
            "name": "capitalised words after a word for who did the work (under ZHONG N, by "
            "LEDUC, attn Amanda Jordan; not under GA, by Hand)",
            "case": "sensitive",
            "check": "after_cue",
            "regex": f"(?<![{UPPER}{LOWER}0-9])(?:{CUES})[ \\t]*:?[ \\t]+(?P<value>{NAMEISH}"
            f"(?:(?:[ \\t]*,[ \\t]*|[ \\t_]+){NAMEISH}){{0,3}}){END}",
        },
        {
            "kind": name,
            "name": "capitalised words after a word for a relative, a carer or the next of kin "
            "(wife TURNER, NOK I. van Oudewater, husband van Breugel; not NOK CT)",
            "case": "sensitive",
            "check": "after_kin",
            "regex": f"(?<![{UPPER}{LOWER}0-9])(?:{KIN})[ \\t]*:?[ \\t]+(?P<value>{NAMEISH}"
            f"(?:(?:[ \\t]*,[ \\t]*|[ \\t_]+){NAMEISH}){{0,3}}){END}",
        },
        {
            "kind": name,
            "name": "an initial glued to a surname (CGardiner, JPhillipsen; not TSpine)",
            "case": "sensitive",
            "check": "glued_initial",
            "regex": f"{START}(?P<value>[{UPPER}][{UPPER}][{LOWER}]{{2,40}}){END}",
        },
        {
            "kind": name,
            "name": "lower-case title without its dot (mr smith, ms jones; not mr brain, "
            "ms lesions)",
            "case": "sensitive",
            "check": "after_title",
            "regex": f"(?<![0-9A-Za-z])(?:mr|ms|mx|Mr|Ms|Mx)[ \\t_]+(?P<value>[a-z][a-z{JOIN}]"
            "{2,})(?![0-9A-Za-z])",
        },
        {
            "kind": name,
            "name": "surname and initial (Okafor C.; not Vitamin D, Lung L)",
            "case": "sensitive",
            "check": "surname_initial",
            "regex": f"{START}(?P<value>{TITLE})[ \\t]+[{UPPER}]\\.(?![{UPPER}{LOWER}0-9])",
        },
        {
            "kind": name,
            "name": "given name and surname in lower case (sarah connolly; not mark lesion)",
            "case": "sensitive",
            "check": "lower_given_surname",
            "regex": f"{START}(?=(?P<value>[{LOWER}]+[ \\t]+[{LOWER}][{LOWER}{JOIN}]+)"
            f"(?![{UPPER}{LOWER}0-9{JOIN}]))",
        },
    ]


def build(text: str) -> str:
    """The table's text with the rows of these checks replaced (appended if absent)."""
    new = rows()
    checks = {r["check"] for r in new}
    lines = text.rstrip("\n").split("\n")
    head, tail = lines[:-2], lines[-2:]  # "{", about, "patterns": [, the rows; "  ]", "}"
    kept = [ln.rstrip(",") for ln in head[3:] if not any(f'"check": "{c}"' in ln for c in checks)]
    body = [*kept, *("    " + json.dumps({**r, "clean": True, "audit": True}) for r in new)]
    out = "\n".join([*head[:3], ",\n".join(body), *tail]) + "\n"
    json.loads(out)  # still a table
    return out


def main() -> int:
    text = TABLE.read_text(encoding="utf-8")
    out = build(text)
    if "--check" in sys.argv:
        print("name rows are up to date" if out == text else "name rows differ: run the tool")
        return 0 if out == text else 1
    TABLE.write_text(out, encoding="utf-8")
    print(f"wrote the name rows of {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
