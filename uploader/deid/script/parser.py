"""Parse a DicomEdit 6 script (our subset) into statements; see docs/scripts.md."""

from __future__ import annotations

import dataclasses

from uploader.deid.script.syntax import (
    Action,
    Assign,
    Call,
    Condition,
    Delete,
    Describe,
    Do,
    Echo,
    Expr,
    If,
    Script,
    ScriptError,
    Statement,
    Str,
    TagPath,
    TagStep,
    Token,
    Var,
    parse_tag,
    tokenize,
)

#: Functions that are statements on their own (called for their effect).
ACTIONS = frozenset({"reject", "retainPrivateTags", "removeAllPrivateTags", "mapReferencedUIDs"})


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, n: int = 1) -> Token:
        return self.tokens[min(self.i + n, len(self.tokens) - 1)]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return t

    def expect(self, kind: str, text: str | None = None, what: str = "") -> Token:
        t = self.tok
        if t.kind != kind or (text is not None and t.text != text):
            wanted = what or (repr(text) if text else kind)
            got = "end of line" if t.kind == "nl" else repr(t.text)
            raise ScriptError(t.line, t.col, f"expected {wanted}, found {got}")
        return self.take()

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    # ----------------------------------------------------------- statements

    def script(self, errors: list[ScriptError] | None = None) -> Script:
        """Parse every statement; with ``errors``, collect each line's error and go on."""
        out = Script()
        while self.i < len(self.tokens) - 1:
            if self.at("nl"):
                self.take()
                continue
            if errors is None:
                self._line(out)
                continue
            try:
                self._line(out)
            except ScriptError as exc:
                errors.append(exc)
                while not self.at("nl"):
                    self.take()
        return out

    def _line(self, out: Script) -> None:
        j = self.i
        while self.tokens[j].kind != "nl":
            if self.tokens[j].kind == "error":
                bad = self.tokens[j]
                raise ScriptError(bad.line, bad.col, bad.text)
            j += 1
        if self.at("name", "version"):
            t = self.take()
            out.version = self._string(self.expect("string", what="a version string")).value
            if not out.version.startswith("6"):
                raise ScriptError(
                    t.line, t.col, f"version {out.version!r}: only DicomEdit 6 is supported"
                )
        else:
            out.statements.append(self.statement())
        if not self.at("nl"):
            raise ScriptError(
                self.tok.line, self.tok.col, f"unexpected {self.tok.text!r} after the statement"
            )

    def statement(self) -> Statement:
        t = self.tok
        if self.at("name", "describe"):
            self.take()
            name = self.expect("name", what="a variable name").text
            words = []
            while not self.at("nl"):
                w = self.take()
                words.append(self._string(w).value if w.kind == "string" else w.text)
            return Describe(name, tuple(words), t.line, t.col)
        action = self.action()
        if self.at("punct", "?"):
            cond = self._as_condition(action, t)
            self.take()
            then = self._effect()
            otherwise = None
            if self.at("punct", ":"):
                self.take()
                otherwise = self._effect()
            return If(cond, then, otherwise, t.line, t.col)
        if isinstance(action, _Bare):
            raise ScriptError(
                t.line, t.col, "a value on its own does nothing: assign it (:=) or test it (?)"
            )
        return action

    def _effect(self) -> Action:
        t = self.tok
        action = self.action()
        if isinstance(action, _Bare):
            raise ScriptError(t.line, t.col, "after '?' or ':' comes an action (:=, -, a call)")
        return action

    def action(self) -> Action | _Bare:
        t = self.tok
        if self.at("punct", "-"):
            self.take()
            return Delete(self.path(), t.line, t.col)
        if self.at("name", "echo"):
            self.take()
            return Echo(self.expr(), t.line, t.col)
        if self.at("name", "removeAllPrivateTags") and self.peek().kind != "punct":
            self.take()
            return Do(Call("removeAllPrivateTags", (), t.line, t.col), t.line, t.col)
        left = self.expr()
        if self.at("assign"):
            if not isinstance(left, TagPath | Var):
                raise ScriptError(t.line, t.col, "only a tag or a variable can be assigned")
            self.take()
            return Assign(left, self.expr(), t.line, t.col)
        if isinstance(left, Call) and left.name in ACTIONS:
            return Do(left, t.line, t.col)
        if self.at("op"):
            op = self.take().text
            right = self.expr()
            return _Bare(Condition(left, op, right, t.line, t.col))
        return _Bare(Condition(left, None, None, t.line, t.col))

    @staticmethod
    def _as_condition(action: Action | _Bare, t: Token) -> Condition:
        if isinstance(action, _Bare):
            return action.condition
        raise ScriptError(t.line, t.col, "a condition before '?' must be a comparison or a test")

    # ----------------------------------------------------------- expressions

    def expr(self) -> Expr:
        t = self.tok
        if t.kind == "string":
            return self._string(self.take())
        if t.kind == "number":
            self.take()
            return Str(t.text, t.line, t.col)
        if t.kind == "tag" or (t.kind == "punct" and t.text == "+"):
            return self.path()
        if t.kind == "name":
            self.take()
            if self.at("punct", "["):
                return self.call(t)
            return Var(t.text, t.line, t.col)
        got = "end of line" if t.kind == "nl" else repr(t.text)
        raise ScriptError(
            t.line, t.col, f"expected a value (string, tag, variable or function), found {got}"
        )

    def call(self, name: Token) -> Call:
        self.expect("punct", "[")
        args: list[Expr] = []
        if not self.at("punct", "]"):
            args.append(self.expr())
            while self.at("punct", ","):
                self.take()
                args.append(self.expr())
        if not self.at("punct", "]"):
            raise ScriptError(
                self.tok.line, self.tok.col, f"unbalanced brackets: {name.text}[ is not closed"
            )
        self.take()
        return Call(name.text, tuple(args), name.line, name.col)

    def path(self) -> TagPath:
        start = self.tok
        anywhere = False
        if self.at("punct", "+"):
            self.take()
            self.expect("punct", "/", what="'/' after '+' (anywhere: +/(gggg,eeee))")
            anywhere = True
        steps: list[TagStep] = []
        while True:
            t = self.expect("tag", what="a tag (gggg,eeee)")
            step = parse_tag(t)
            if self.at("punct", "["):
                self.take()
                if self.at("punct", "%"):
                    self.take()
                    item = -1
                else:
                    item = int(self.expect("number", what="an item number or %").text)
                self.expect("punct", "]", what="']' (unbalanced brackets)")
                step = dataclasses.replace(step, item=item)
            steps.append(step)
            if not self.at("punct", "/"):
                break
            if step.item is None:
                raise ScriptError(
                    self.tok.line,
                    self.tok.col,
                    "a path step into a sequence needs an item: (gggg,eeee)[n]/...",
                )
            self.take()
        text = "".join(tok.text for tok in self.tokens[self.tokens.index(start) : self.i])
        return TagPath(tuple(steps), anywhere, text, start.line, start.col)

    @staticmethod
    def _string(t: Token) -> Str:
        body = t.text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return Str(body, t.line, t.col)


@dataclasses.dataclass(frozen=True)
class _Bare:
    condition: Condition


def parse(source: str, name: str = "<script>") -> Script:
    """Parse a script; raises ScriptError (line, col, message) at the first syntax error."""
    script = _Parser(tokenize(source)).script()
    script.name = name
    return script


def parse_all(source: str, name: str = "<script>") -> tuple[Script, list[ScriptError]]:
    """Parse a script, collecting one error per bad line (for ``uploader script check``)."""
    tokens = tokenize(source, recover=True)
    errors: list[ScriptError] = []
    script = _Parser(tokens).script(errors)
    script.name = name
    return script, errors
