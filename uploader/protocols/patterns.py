"""The regular expressions of a protocol (structure patterns, forbidden names, ``matches``).

A protocol is written by a trial coordinator and a value it is matched against comes from a
hospital's DICOM, so neither is trusted: Python's ``re`` backtracks, and a pattern such as
``(a+)+$`` against a long ROI name would hold the node for ever. Protocol patterns therefore run
on RE2 (the ``google-re2`` binding), which matches in time linear in the text and refuses what
would need backtracking (backreferences, lookarounds): ``uploader protocol check`` reports such
a pattern as an error. Each pattern is bounded in length and in the memory RE2 may give it, and
each match looks at most ``MAX_TEXT`` characters of the value.
"""

from __future__ import annotations

from functools import lru_cache

import re2

MAX_PATTERN = 1000  # characters in one pattern
MAX_TEXT = 10_000  # characters of a value a pattern is matched against
_MAX_MEM = 8 << 20  # bytes RE2 may use for one compiled pattern


class PatternError(ValueError):
    """A protocol pattern is not accepted; the message says why, in words for the coordinator."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print the pattern on stderr
    options.max_mem = _MAX_MEM
    return options


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re2._Regexp[str]:
    """Compile a protocol pattern with RE2.

    Raises:
        PatternError: too long, not valid, or using what RE2 does not do (backreferences,
            lookahead or lookbehind), or too large once compiled.
    """
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"a pattern is at most {MAX_PATTERN} characters ({len(pattern)} given)")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        first = exc.args[0] if exc.args else ""
        detail = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        raise PatternError(
            f"not an accepted regular expression ({detail}); patterns are matched by RE2, which "
            "has no backreferences or lookarounds, so that no pattern can hang the node"
        ) from exc


def search(pattern: str, text: str) -> bool:
    """True when ``pattern`` matches somewhere in (the first ``MAX_TEXT`` characters of)
    ``text``. A pattern that does not compile matches nothing (``protocol check`` and the
    loader refuse such a protocol before it is used)."""
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return False
    return compiled.search(text[:MAX_TEXT]) is not None
