"""The DicomEdit 6 subset we accept: tokens, tag paths, expressions and statements.

Every node keeps its line and column so that an error points at the character that caused it.
Parsing never runs anything; ``uploader.deid.script.check`` then checks names and arities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from uploader.errors import PermanentError


class ScriptError(PermanentError):
    """A script that cannot be loaded: where (line, col, 1-based) and what."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.line, self.col, self.message = line, col, message


# ---------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>//[^\n]*)
  | (?P<nl>\n)
  | (?P<tag>\((?:[0-9A-Fa-fXx]{4}),(?:\{[^}\n]*\}[0-9A-Fa-fXx]{2}|[0-9A-Fa-fXx]{4})\))
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<assign>:=)
  | (?P<op>!=|!~|=|~)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[\[\],?:\-+/%])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int
    col: int


def tokenize(source: str, recover: bool = False) -> list[Token]:
    """Split a script into tokens (comments and spaces dropped, newlines kept).

    ``recover``: instead of raising, emit an ``error`` token and skip to the end of the line.
    Raises:
        ScriptError: a character that starts no token, or an unterminated string.
    """
    tokens: list[Token] = []
    line, line_start, pos = 1, 0, 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        col = pos - line_start + 1
        if not m:
            ch = source[pos]
            if ch == '"':
                message = "unterminated string"
            elif ch == "(":
                message = "bad tag: write (gggg,eeee) with 4 hex digits each"
            else:
                message = f"unexpected character {ch!r}"
            if not recover:
                raise ScriptError(line, col, message)
            tokens.append(Token("error", message, line, col))
            end = source.find("\n", pos)
            pos = len(source) if end < 0 else end
            continue
        kind = m.lastgroup or ""
        if kind == "nl":
            tokens.append(Token("nl", "\n", line, col))
            line, line_start = line + 1, m.end()
        elif kind not in ("ws", "comment"):
            tokens.append(Token(kind, m.group(), line, col))
        pos = m.end()
    tokens.append(Token("nl", "", line, pos - line_start + 1))
    return tokens


# ---------------------------------------------------------------- tag paths


@dataclass(frozen=True)
class TagStep:
    """One element of a path: group/element with X wildcards, or private by creator."""

    group: int
    element: int
    mask: int  # 1 bits where the tag is fixed (X digits are 0)
    creator: str | None = None  # private: element is the low byte within the creator's block
    item: int | None = None  # [n] for a sequence item; -1 for [%] (every item)

    def matches(self, tag: int) -> bool:
        """True if ``tag`` (public) is this step's tag."""
        return tag & self.mask == ((self.group << 16) | self.element) & self.mask

    @property
    def exact(self) -> int | None:
        """The single tag this step names, or None for wildcards and private steps."""
        if self.mask == 0xFFFFFFFF and self.creator is None:
            return (self.group << 16) | self.element
        return None


@dataclass(frozen=True)
class TagPath:
    """A path to attributes: steps through sequence items, maybe anywhere in the tree (+/)."""

    steps: tuple[TagStep, ...]
    anywhere: bool
    text: str
    line: int
    col: int


def parse_tag(tok: Token) -> TagStep:
    """Parse one ``(gggg,eeee)`` or ``(gggg,{creator}ee)`` token."""
    body = tok.text[1:-1]
    g, e = body.split(",", 1)
    creator = None
    if e.startswith("{"):
        creator, e = e[1 : e.index("}")], e[e.index("}") + 1 :]
        if not int(g.replace("X", "0").replace("x", "0"), 16) & 1:
            raise ScriptError(tok.line, tok.col, "a private creator needs an odd group")
    if creator is not None:
        if re.search("[Xx]", g + e):
            raise ScriptError(tok.line, tok.col, "no X wildcards in a private tag")
        return TagStep(int(g, 16), int(e, 16), 0xFFFFFFFF, creator.strip())
    hexes = g + e
    value = int(re.sub("[Xx]", "0", hexes), 16)
    mask = int("".join("0" if c in "Xx" else "F" for c in hexes), 16)
    return TagStep(value >> 16, value & 0xFFFF, mask)


# ---------------------------------------------------------------- expressions and statements


@dataclass(frozen=True)
class Str:
    value: str
    line: int
    col: int


@dataclass(frozen=True)
class Var:
    name: str
    line: int
    col: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    line: int
    col: int


Expr = Str | Var | Call | TagPath


@dataclass(frozen=True)
class Condition:
    left: Expr
    op: str | None  # None: the left side is a boolean function (ismatch, isPresent)
    right: Expr | None
    line: int
    col: int


@dataclass(frozen=True)
class Assign:
    target: TagPath | Var
    value: Expr
    line: int
    col: int


@dataclass(frozen=True)
class Delete:
    path: TagPath
    line: int
    col: int


@dataclass(frozen=True)
class Do:
    """A function called for its effect: reject[...], retainPrivateTags[...] and the like."""

    call: Call
    line: int
    col: int


@dataclass(frozen=True)
class Echo:
    value: Expr
    line: int
    col: int


@dataclass(frozen=True)
class Describe:
    name: str
    words: tuple[str, ...]
    line: int
    col: int


@dataclass(frozen=True)
class If:
    condition: Condition
    then: Action
    otherwise: Action | None
    line: int
    col: int


Action = Assign | Delete | Do | Echo
Statement = Assign | Delete | Do | Echo | Describe | If


@dataclass
class Script:
    """A parsed script: its statements, declared version and source name."""

    statements: list[Statement] = field(default_factory=list)
    version: str | None = None
    name: str = "<script>"
