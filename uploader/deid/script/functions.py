"""The script functions: name, arity, what they return, and their implementation.

Values are strings, as in DicomEdit; tests (ismatch, isPresent) return "true" or "".
Regular expressions match the whole string, as Java's ``matches`` does in XNAT.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uploader.deid.script.run import Run


@dataclass(frozen=True)
class Function:
    """A script function: its arity (max None: any number) and implementation."""

    name: str
    min_args: int
    max_args: int | None
    impl: Callable[[Run, list[str]], str]
    regex_arg: int | None = None  # index of an argument that must be a regular expression
    effect: bool = False  # a statement on its own (reject, retainPrivateTags...)
    example: str = ""


def _format(_run: Run, a: list[str]) -> str:
    return re.sub(
        r"\{(\d+)\}", lambda m: a[1 + int(m.group(1))] if 1 + int(m.group(1)) < len(a) else "", a[0]
    )


def _substring(_run: Run, a: list[str]) -> str:
    start = int(a[1])
    end = int(a[2]) if len(a) > 2 else len(a[0])
    return a[0][start:end]


def _match(_run: Run, a: list[str]) -> str:
    m = re.fullmatch(a[1], a[0])
    if not m:
        return ""
    group = int(a[2]) if len(a) > 2 else 0
    return m.group(group) or "" if group <= (m.re.groups or 0) else ""


def _shift_date(_run: Run, a: list[str]) -> str:
    try:
        day = dt.datetime.strptime(a[0][:8], "%Y%m%d").date()
        return (day + dt.timedelta(days=int(float(a[1])))).strftime("%Y%m%d")
    except ValueError:
        return ""


def _shift_datetime(_run: Run, a: list[str]) -> str:
    text = a[0].split("+")[0].split("-")[0] if len(a[0]) > 8 else a[0]
    digits = re.match(r"\d{8,14}", text)
    if not digits:
        return ""
    raw = digits.group().ljust(14, "0")
    moment = dt.datetime.strptime(raw, "%Y%m%d%H%M%S") + dt.timedelta(seconds=int(float(a[1])))
    return moment.strftime("%Y%m%d%H%M%S")


def _by_run(_run: Run, _a: list[str]) -> str:
    return ""  # acts on tag paths, not values: carried out by Run itself


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "concatenate",
            1,
            None,
            lambda _r, a: "".join(a),
            example='concatenate["CT-", (0020,0011)]',
        ),
        Function("format", 1, None, _format, example='format["{0}_{1}", subject, "CT"]'),
        Function("lowercase", 1, 1, lambda _r, a: a[0].lower(), example="lowercase[modalityLabel]"),
        Function("uppercase", 1, 1, lambda _r, a: a[0].upper(), example="uppercase[(0008,103E)]"),
        Function("substring", 2, 3, _substring, example="substring[(0008,0020), 0, 4]"),
        Function(
            "replace",
            3,
            3,
            lambda _r, a: a[0].replace(a[1], a[2]),
            example='replace[(0008,103E), " ", "_"]',
        ),
        Function("match", 2, 3, _match, regex_arg=1, example='match[(0008,103E), "(T[12]).*", 1]'),
        Function(
            "ismatch",
            2,
            2,
            lambda _r, a: "true" if re.fullmatch(a[1], a[0]) else "",
            regex_arg=1,
            example='ismatch[(0008,103E), "(?i).*dose.*"]',
        ),
        Function("isPresent", 1, 1, _by_run, example="isPresent[(0018,1030)]"),
        Function("hashUID", 1, 1, lambda r, a: r.hash_uid(a[0]), example="hashUID[(0020,000D)]"),
        Function(
            "newUID", 0, 0, lambda _r, _a: "2.25." + str(uuid.uuid4().int), example="newUID[]"
        ),
        Function(
            "lookup",
            2,
            2,
            lambda r, a: r.lookup(a[0], a[1]),
            example='lookup["sites", (0008,0080)]',
        ),
        Function(
            "shiftDateByIncrement",
            2,
            2,
            _shift_date,
            example='shiftDateByIncrement[(0008,0020), "-14"]',
        ),
        Function(
            "shiftDateTimeByIncrement",
            2,
            2,
            _shift_datetime,
            example='shiftDateTimeByIncrement[(0008,002A), "3600"]',
        ),
        Function(
            "makeSessionLabel",
            1,
            1,
            lambda r, a: r.session_label(a[0]),
            example='makeSessionLabel[format["{0}_v##", subject]]',
        ),
        Function(
            "reject",
            0,
            1,
            lambda r, a: r.reject(a[0] if a else ""),
            effect=True,
            example='(0008,0060) = "SR" ? reject["no structured reports"]',
        ),
        Function(
            "retainPrivateTags",
            1,
            None,
            _by_run,
            effect=True,
            example="retainPrivateTags[(0019,{SIEMENS MR HEADER}0F)]",
        ),
        Function(
            "removeAllPrivateTags", 0, 0, _by_run, effect=True, example="removeAllPrivateTags"
        ),
        Function(
            "mapReferencedUIDs",
            1,
            None,
            _by_run,
            effect=True,
            example="mapReferencedUIDs[+/(0008,1155)]",
        ),
    )
}
#: Functions whose arguments are tag paths acted on, not values read.
PATH_ARGUMENTS = frozenset(
    {"isPresent", "retainPrivateTags", "mapReferencedUIDs", "removeAllPrivateTags"}
)
