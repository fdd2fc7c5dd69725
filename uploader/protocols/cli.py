"""``uploader protocol check | validate | schema``: the trial coordinator's commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uploader.protocols.loader import check_protocol, load_protocol
from uploader.protocols.model import Protocol
from uploader.protocols.study import load_study
from uploader.protocols.validate import Report, validate_study

_MARK = {"pass": "PASS", "fail": "FAIL", "warn": "WARN"}


def run(args: argparse.Namespace) -> int:
    """Run one protocol subcommand; return its exit code (ConfigError goes up to ``main``)."""
    if args.protocol_command == "schema":
        print(json.dumps(Protocol.model_json_schema(), indent=2))
        return 0
    if args.protocol_command == "check":
        return _check(args.files)
    report = validate_study(load_protocol(args.protocol), load_study(args.study))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print_report(report)
    return 0 if report.passed else 1


def _check(files: list[Path]) -> int:
    failed = 0
    for f in files:
        protocol, problems = check_protocol(f)
        for p in problems:
            print(p)
        if protocol is None:
            failed += 1
        else:
            print(f"{f}: ok ({protocol.id} version {protocol.version})")
    return 1 if failed else 0


def _print_report(report: Report) -> None:
    width = max((len(c.check) for c in report.checks), default=10)
    for c in report.checks:
        print(f"{_MARK[c.status]}  {c.check:<{width}}  {c.message}")
    if report.relabel:
        print("relabel: " + ", ".join(f"{old!r} -> {new!r}" for old, new in report.relabel.items()))
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    verdict = "PASSED" if report.passed else "FAILED"
    counts = f"{fails} failed, {warns} warning(s), {len(report.checks)} checks"
    print(f"{report.protocol}: {verdict} ({counts})")
