"""``uploader script check | preview``: scripts are checked before they ever run.

Above both the de-identification (`uploader.deid`, which owns the script language) and the
protocols (`uploader.protocols`, whose options select the profile a script is checked against).
"""

from __future__ import annotations

import argparse
import copy
import secrets
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from uploader.deid.elements import walk
from uploader.deid.profile import load_profile
from uploader.deid.script.check import Finding, check
from uploader.deid.script.parser import parse_all
from uploader.errors import ConfigError, VerificationError, WithheldError
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


def _flat(ds: Dataset) -> dict[str, tuple[str, str]]:
    out = {}
    for path, tag, vr, parent in walk(ds):
        if vr == "SQ":
            continue
        where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        elem = parent[tag]
        value = elem.value
        if isinstance(value, bytes):
            text = f"<{len(value)} bytes>"
        elif value is None:
            text = '""'
        else:
            text = str(value)
            if len(text) > _MAX_VALUE:
                text = text[: _MAX_VALUE - 3] + "..."
        out[where] = (elem.keyword or elem.name.replace(" ", ""), text)
    return out


def _preview(args: argparse.Namespace) -> int:
    from uploader.deid.batch import read_dicom
    from uploader.deid.engine import deidentify
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
    before = _flat(copy.deepcopy(ds))
    outcome = None
    try:
        outcome = deidentify(ds, settings)
    except WithheldError as exc:
        print(f"WITHHELD: {exc.reason}")
    except VerificationError as exc:
        print("WOULD BE WITHHELD by the verifier:")
        for p in exc.problems:
            print(f"  {p}")
    after = _flat(ds)
    if not args.key_file:
        print("(pseudonyms below come from a throwaway key: give --key-file for the real ones)")
    for where in sorted(set(before) | set(after)):
        old, new = before.get(where), after.get(where)
        if old == new:
            continue
        name = (new or old or ("", ""))[0]
        if old is None and new is not None:
            print(f"+ {where} {name}: {new[1]}")
        elif new is None and old is not None:
            print(f"- {where} {name}: {old[1]}")
        elif old is not None and new is not None:
            print(f"~ {where} {name}: {old[1]} -> {new[1]}")
    return 0 if outcome is not None else 1
