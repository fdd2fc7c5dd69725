"""The DicomEdit subset: every construct parses; every mistake is an error at load, with its
line and column, never at run time."""

from __future__ import annotations

import pytest

from uploader.deid.profile import load_profile
from uploader.deid.script.check import check, load_script
from uploader.deid.script.parser import parse, parse_all
from uploader.deid.script.syntax import (
    Assign,
    Delete,
    Describe,
    Do,
    Echo,
    If,
    ScriptError,
    TagPath,
    Var,
)

EVERY_CONSTRUCT = """\
version "6.3"
// a comment on its own line
-(0010,0030)
- (0010,1000) // delete, with a space and a trailing comment
(0008,1030) := "text with \\"quotes\\""
arm := "A"
describe visit "Visit number" hidden
echo concatenate["arm ", arm]
removeAllPrivateTags
(0008,0080) = "X" ? -(0008,0081) : (0008,0081) := "kept"
(0008,0060) != "CT" ? reject["only CT"]
(0008,103E) ~ "(?i)t1.*" ? (0008,103E) := "T1"
(0008,103E) !~ "T[12]" ? -(0008,103E)
isPresent[(0018,1030)] ? (0018,1030) := "P"
-(0019,{SIEMENS MR HEADER}0F)
-(0008,1115)[0]/(0008,1140)[%]/(0008,1155)
-+/(0010,0010)
-(50XX,XXXX)
retainPrivateTags[(7053,{Philips PET Private Group}00)]
mapReferencedUIDs[+/(0008,1155)]
"""


def test_every_construct_parses() -> None:
    script = parse(EVERY_CONSTRUCT)
    kinds = [type(s).__name__ for s in script.statements]
    assert script.version == "6.3"
    assert kinds == [
        "Delete",
        "Delete",
        "Assign",
        "Assign",
        "Describe",
        "Echo",
        "Do",
        "If",
        "If",
        "If",
        "If",
        "If",
        "Delete",
        "Delete",
        "Delete",
        "Delete",
        "Do",
        "Do",
    ]
    st = script.statements
    assert isinstance(st[2], Assign) and st[2].value.value == 'text with "quotes"'  # type: ignore[union-attr]
    assert isinstance(st[3], Assign) and isinstance(st[3].target, Var)
    assert isinstance(st[4], Describe) and st[4].words == ("Visit number", "hidden")
    assert isinstance(st[5], Echo)
    cond = st[7]
    assert isinstance(cond, If) and cond.condition.op == "=" and cond.otherwise is not None
    assert [s.condition.op for s in st[8:12]] == ["!=", "~", "!~", None]  # type: ignore[union-attr]
    private = st[12]
    assert isinstance(private, Delete)
    assert (
        private.path.steps[0].creator == "SIEMENS MR HEADER"
        and private.path.steps[0].element == 0x0F
    )
    nested = st[13].path  # type: ignore[union-attr]
    assert [s.item for s in nested.steps] == [0, -1, None]
    assert st[14].path.anywhere  # type: ignore[union-attr]
    wildcard = st[15].path.steps[0]  # type: ignore[union-attr]
    assert (
        wildcard.matches(0x50003000)
        and wildcard.matches(0x501E0010)
        and not wildcard.matches(0x60003000)
    )
    assert isinstance(st[16], Do) and st[16].call.name == "retainPrivateTags"
    assert check(script) == []


@pytest.mark.parametrize(
    ("source", "line", "col", "message"),
    [
        (
            '(0008,1030) := concatinate["a"]',
            1,
            16,
            "unknown function 'concatinate'; did you mean 'concatenate'?",
        ),
        ('(0008,1030) := lowercase["a", "b"]', 1, 16, "lowercase takes 1 argument(s), not 2"),
        ('(0008,1030) := substring["a"]', 1, 16, "substring takes 2 to 3 argument(s), not 1"),
        ("(0008,1030) := (0008,103", 1, 16, "bad tag: write (gggg,eeee)"),
        ("-(0008,10G0)", 1, 2, "bad tag"),
        ('(0008,1030) := lowercase["a"', 1, 29, "unbalanced brackets: lowercase[ is not closed"),
        ("-(0008,1115)[0/(0008,1155)", 1, 15, "']' (unbalanced brackets)"),
        (
            'ismatch[(0008,103E), "([a-"] ? reject["x"]',
            1,
            22,
            "regular expression does not compile",
        ),
        ('(0008,103E) ~ "(" ? -(0008,103E)', 1, 15, "regular expression does not compile"),
        ('(0008,1030) := "open', 1, 16, "unterminated string"),
        ("(0008,1030) := @", 1, 16, "unexpected character '@'"),
        ("(0008,1030) := nobody", 1, 16, "unknown variable 'nobody'"),
        ('(50XX,3000) := "x"', 1, 1, "cannot assign to a wildcard"),
        ('+/(0010,0010) := "x"', 1, 1, "cannot assign to a wildcard or +/ path"),
        ('(0009,0010) := "x"', 1, 1, "not a known attribute"),
        ('version "5.0"', 1, 1, "only DicomEdit 6"),
        ('"just a value"', 1, 1, "a value on its own does nothing"),
        ("retainPrivateTags[(0010,0010)]", 1, 19, "needs (gggg,{creator}ee) tags"),
        ('isPresent["(0010,0010)"] ? -(0010,0010)', 1, 11, "isPresent takes tags, not values"),
        ('(0008,1030) := "a" "b"', 1, 20, "unexpected '\"b\"' after the statement"),
        ("-(0008,1115)/(0008,1155)", 1, 13, "needs an item"),
        ('(0008,0060) = "SR" ? "x"', 1, 22, "comes an action"),
        ("-(0008,{CREATOR}10)", 1, 2, "odd group"),
        ('lookup["sites", "x"] ? -(0008,0080)', 1, 1, "no lookup table 'sites'"),
    ],
)
def test_errors_are_found_at_load_time_with_line_and_column(
    source: str, line: int, col: int, message: str
) -> None:
    with pytest.raises(ScriptError) as info:
        load_script("// first line\n" + source, "s.das")
    assert (info.value.line, info.value.col) == (line + 1, col)
    assert message in info.value.message


def test_check_reports_every_bad_line_not_just_the_first() -> None:
    script, errors = parse_all("(0008,1030) := (0008,103\n-(0010,0010)\n(0008,1030) := @\n")
    assert [(e.line, e.col) for e in errors] == [(1, 16), (3, 16)]
    assert len(script.statements) == 1


def test_statements_the_profile_makes_moot_are_warnings() -> None:
    script = parse("- (0010,0030)\n-(0008,1030)\n-(0018,0050)\n")
    findings = check(script, profile=load_profile())
    assert [(f.line, f.severity) for f in findings] == [(1, "warning"), (2, "warning")]
    assert "Patient's Birth Date: the profile already removes it (Z)" in findings[0].message
    assert findings[1].message.endswith("(X)")


def test_variables_from_protocol_and_describe_are_known() -> None:
    load_script(
        "(0012,0051) := arm\ndescribe visit\n(0012,0050) := visit", variables=frozenset({"arm"})
    )
    assert isinstance(parse("(0008,1030) := project").statements[0].value, Var)  # type: ignore[union-attr]
    assert isinstance(parse("-(0008,1030)").statements[0].path, TagPath)  # type: ignore[union-attr]


def test_docs_show_every_function_with_an_example_that_checks_clean() -> None:
    from uploader.deid.script.functions import FUNCTIONS

    from .conftest import ROOT

    text = (ROOT / "docs" / "scripts.md").read_text()
    for name, f in FUNCTIONS.items():
        assert f"| `{name}` |" in text and f"`{f.example}`" in text, name
        statement = f.example if f.effect else f"(0008,0070) := {f.example}"
        load_script(statement, lookups=frozenset({"sites"}))
