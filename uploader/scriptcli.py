"""``uploader script check | preview``: scripts are checked before they ever run.

Above both the de-identification (`uploader.deid`, which owns the script language) and the
protocols (`uploader.protocols`, whose options select the profile a script is checked against).
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

from uploader.deid.profile import load_profile
from uploader.deid.script.check import Finding, check
from uploader.deid.script.parser import parse_all
from uploader.errors import ConfigError
from uploader.protocols.loader import load_protocol

_MAX_VALUE = 64


def run(args: argparse.Namespace) -> int:
    """Run one script subcommand; return its exit code."""
    if args.script_command == "check":
        return _check(args.files, args.protocol)
    return _preview(args)


def _options(protocol: Path | None) -> frozenset[Any] | None:
    if protocol is None:
        return None
    return frozenset(load_protocol(protocol).deidentify.options)


def _show(path: Path, lines: list[str], line: int, col: int, message: str) -> None:
    print(f"{path}:{line}:{col}: {message}")
    if 0 < line <= len(lines):
        print("    " + lines[line - 1].rstrip())
        print("    " + " " * (col - 1) + "^")


def _check(files: list[Path], protocol: Path | None) -> int:
    profile = load_profile(_options(protocol))
    errors = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the script: {exc}") from exc
        lines = text.splitlines()
        script, syntax_errors = parse_all(text, str(path))
        findings = [Finding(e.line, e.col, e.message) for e in syntax_errors]
        findings += check(script, profile=profile)
        for f in sorted(findings, key=lambda f: (f.line, f.col)):
            prefix = "" if f.severity == "error" else "warning: "
            _show(path, lines, f.line, f.col, prefix + f.message)
        bad = sum(f.severity == "error" for f in findings)
        errors += bad
        if not bad:
            print(f"{path}: ok")
    return 1 if errors else 0


def _preview(args: argparse.Namespace) -> int:
    from uploader.deid.batch import read_dicom
    from uploader.deid.preview import preview
    from uploader.deid.pseudonyms import read_key
    from uploader.runconfig import build_settings

    key = read_key(args.key_file) if args.key_file else secrets.token_bytes(32)
    settings = build_settings(key, args.protocol, args.site, args.script)
    try:
        ds = read_dicom(args.dicom_file)
    except Exception as exc:
        raise ConfigError(
            f"{args.dicom_file}: not a readable DICOM file ({type(exc).__name__})"
        ) from exc
    result = preview(ds, settings)  # the comparison the identifiable node's page shows too
    if result.withheld:
        print(f"WITHHELD: {result.withheld}")
    if result.problems:
        print("WOULD BE WITHHELD by the verifier:")
        for p in result.problems:
            print(f"  {p}")
    if not args.key_file:
        print("(pseudonyms below come from a throwaway key: give --key-file for the real ones)")
    marks = {"added": "+", "removed": "-"}
    for c in result.changes:
        if c.kind == "replaced":
            print(f"~ {c.where} {c.keyword}: {c.before} -> {c.after}")
        elif c.kind in marks:
            value = c.after if c.after is not None else c.before
            print(f"{marks[c.kind]} {c.where} {c.keyword}: {value}")
    return 1 if result.refused else 0
