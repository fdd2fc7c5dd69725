"""The ``uploader`` command. Only ``main`` turns errors into exit codes and one-line messages.

Exit codes: 0 success; 1 the job ran but something failed (a file not written, a check failed);
2 bad usage or configuration (the message names the file and the problem).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uploader.errors import ConfigError, UploaderError
from uploader.node.commands import NodeCommands, add_node_parsers, registered, route
from uploader.node.commands import run as run_node_command
from uploader.version import __version__

log = logging.getLogger(__name__)
DESCRIPTION = (
    "Pseudonymise hospital DICOM studies (CT, MR, RT) for clinical trials, check them, and "
    "send them to the trial's repository: run either node, check and review studies, or "
    "de-identify a folder by hand. Each node's commands: `uploader NODE --help`."
)
EPILOG = (
    "Start with `uploader demo`. Guides: docs/deployment.md (IT), docs/identifiable-node.md, "
    "docs/anonymised-node.md, docs/protocols.md. Exit codes: 0 done, 1 something failed, "
    "2 bad usage or configuration."
)
_SHOWN = 5  # problems listed per failing file by `verify` unless --all
# the core's own commands; each node adds its own (uploader.node.commands)
#: commands that never decode pixels nor download: pydicom is imported lean for them
_HEADERS_ONLY = frozenset({"anonymise", "anonymize", "verify"})
CORE_COMMANDS = ("anonymise", "anonymize", "verify", "sample", "protocol", "script", "demo")


def _parser(nodes: Sequence[NodeCommands]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uploader", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"uploader {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (never identifiers)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("anonymise", aliases=["anonymize"], help="de-identify a folder of DICOM")
    a.add_argument("input", type=Path, help="a DICOM file or a folder, read recursively")
    a.add_argument("output", type=Path, help="folder for the de-identified files")
    a.add_argument("--key-file", type=Path, help="the site's secret pseudonymisation key")
    a.add_argument("--generate-key", type=Path, metavar="FILE", help="create a new key in FILE")
    a.add_argument("--protocol", type=Path, help="trial protocol (YAML)")
    a.add_argument("--site", default="", help="site ID (ClinicalTrialSiteID, {site} in patterns)")
    a.add_argument("--mapping-dir", type=Path, help="write patid_mapping.csv and uid_mapping.csv")
    a.add_argument("--site-script", type=Path, help="the site-wide DicomEdit-style script")
    a.add_argument(
        "--patterns",
        type=Path,
        help="a site's extra pattern table (JSON/YAML, same shape as the packaged one)",
    )
    a.add_argument("--json", action="store_true", help="print a machine-readable summary")

    v = sub.add_parser("verify", help="check that files are de-identified (no original needed)")
    v.add_argument("input", type=Path, help="a DICOM file or a folder, read recursively")
    v.add_argument("--protocol", type=Path, help="trial protocol: its private allow-list")
    v.add_argument("--json", action="store_true", help="print a machine-readable report")
    v.add_argument("--all", action="store_true", help="list every problem of each failing file")
    v.add_argument(
        "--patterns",
        type=Path,
        help="a site's extra pattern table: kept text holding one of its audit rows fails",
    )

    s = sub.add_parser("sample", help="write a sample RT study with planted identifiers")
    s.add_argument("output", type=Path)
    s.add_argument("--slices", type=int, default=8)
    s.add_argument("--size", type=int, default=64, help="rows and columns of each CT slice")

    pr = sub.add_parser("protocol", help="trial protocols: check, validate a study, schema")
    psub = pr.add_subparsers(dest="protocol_command", required=True, metavar="ACTION")
    pc = psub.add_parser("check", help="check protocol files (schema and meaning)")
    pc.add_argument("files", type=Path, nargs="+", metavar="FILE")
    pv = psub.add_parser("validate", help="validate a study folder against a protocol")
    pv.add_argument("protocol", type=Path)
    pv.add_argument("study", type=Path, metavar="DICOM_DIR")
    pv.add_argument("--json", action="store_true", help="print a machine-readable report")
    psub.add_parser("schema", help="print the protocol JSON Schema")

    sc = sub.add_parser("script", help="DicomEdit-style scripts: check, preview")
    ssub = sc.add_subparsers(dest="script_command", required=True, metavar="ACTION")
    scc = ssub.add_parser("check", help="check scripts (errors as FILE:LINE:COL)")
    scc.add_argument("files", type=Path, nargs="+", metavar="FILE")
    scc.add_argument("--protocol", type=Path, help="judge moot statements by its options")
    scp = ssub.add_parser("preview", help="show a file's header before and after profile + script")
    scp.add_argument("script", type=Path)
    scp.add_argument("dicom_file", type=Path)
    scp.add_argument("--protocol", type=Path, help="the trial protocol (options, project script)")
    scp.add_argument("--key-file", type=Path, help="the site key (default: a throwaway key)")
    scp.add_argument("--site", default="SITE", help="site ID for {site} in patterns")

    add_node_parsers(sub, nodes)
    d = sub.add_parser("demo", help="the quick start: sample study -> anonymise -> verify")
    d.add_argument("--workdir", type=Path, help="where to put it (default: a new temp folder)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    nodes = registered()
    given = list(sys.argv[1:] if argv is None else argv)
    try:  # `uploader status --config F` is `uploader identifiable status --config F`, say
        routed = route(given, nodes, set(CORE_COMMANDS))
    except ConfigError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return 2
    args = _parser(nodes).parse_args(routed)
    _quiet_pydicom(headers_only=args.command in _HEADERS_ONLY)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        done = run_node_command(args, nodes)
        return done if done is not None else _dispatch(args)
    except ConfigError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return 2
    except UploaderError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("uploader: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command (imports are per command, to keep start-up fast)."""
    local = {
        "anonymise": _anonymise,
        "anonymize": _anonymise,
        "verify": _verify,
        "sample": _sample,
        "demo": _demo,
    }
    if args.command in local:
        return local[args.command](args)
    if args.command == "script":
        from uploader.scriptcli import run as script_command

        return script_command(args)
    if args.command != "protocol":  # a node's verb reached without routing (no --config)
        raise ConfigError(f"{args.command}: give --config FILE (the node's configuration)")
    from uploader.protocols.cli import run as protocol_command

    return protocol_command(args)


def _quiet_pydicom(*, headers_only: bool) -> None:
    """pydicom's validation warnings quote values (a patient's name, say): never let them out."""
    from uploader.hardening import harden_process

    harden_process(headers_only=headers_only)


def _anonymise(args: argparse.Namespace) -> int:
    from uploader.deid.batch import Mapping, anonymise_tree
    from uploader.deid.pseudonyms import generate_key, read_key
    from uploader.runconfig import build_settings

    if not args.input.exists():
        raise ConfigError(f"{args.input}: no such file or folder")
    if args.key_file and args.generate_key:
        raise ConfigError("give --key-file or --generate-key, not both")
    if args.key_file:
        key = read_key(args.key_file)
    elif args.generate_key:
        key = generate_key(args.generate_key)
        print(
            f"uploader: new site key written to {args.generate_key}; keep it secret and backed up",
            file=sys.stderr,
        )
    else:
        raise ConfigError(
            "no site key: give --key-file FILE, or --generate-key FILE to create one "
            "(pseudonyms are keyed; the same key must be used for every later series)"
        )
    settings = build_settings(key, args.protocol, args.site, args.site_script, args.patterns)
    numbers = args.mapping_dir / "session_numbers.csv" if args.mapping_dir else None
    if settings.scripts is not None and numbers is not None:
        from uploader.deid.script.stage import load_numbers

        load_numbers(settings.scripts.sessions, numbers)
    mapping = Mapping() if args.mapping_dir else None
    summary = _with_progress(
        not args.json,
        lambda tick: anonymise_tree(args.input, args.output, settings, mapping, tick),
        args.input,
    )
    if mapping is not None:
        mapping.write(args.mapping_dir)
    if settings.scripts is not None and numbers is not None:
        from uploader.deid.script.stage import save_numbers

        save_numbers(settings.scripts.sessions, numbers)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        _print_summary(summary, args.output)
    if not summary.ok:
        print(
            f"uploader: {len(summary.failed)} file(s) could not be de-identified (listed above)",
            file=sys.stderr,
        )
    return 0 if summary.ok else 1


def _count(root: Path) -> int:
    from uploader.deid.batch import input_files

    return sum(1 for _ in input_files(root))


def _with_progress(enabled: bool, job: Any, root: Path) -> Any:
    if not (enabled and sys.stderr.isatty()):
        return job(None)
    from tqdm import tqdm

    with tqdm(total=_count(root), unit="file", file=sys.stderr) as bar:
        return job(bar.update)


def _print_summary(summary: Any, out: Path) -> None:
    print(f"written:   {summary.written} file(s) under {out}")
    for subject, sessions in sorted(summary.sessions.items()):
        print(f"  subject {subject}: session(s) {', '.join(sorted(sessions))}")
    print(f"withheld:  {len(summary.withheld)}")
    for f, reason in summary.withheld:
        print(f"  {f}: {reason}")
    print(f"not DICOM: {len(summary.not_dicom)}")
    for f in summary.not_dicom:
        print(f"  {f}")
    print(f"failed:    {len(summary.failed)}")
    for f, reason in summary.failed:
        print(f"  {f}: {reason}")
    if summary.struck:
        print(
            f"cleaned:   {len(summary.struck)} kept value(s) had an identifier struck (review them)"
        )
        for f, where in summary.struck:
            print(f"  {f}: {where}")


def _verify(args: argparse.Namespace) -> int:
    from uploader.verify_folder import audit_tree

    if not args.input.exists():
        raise ConfigError(f"{args.input}: no such file or folder")
    report = audit_tree(args.input, args.protocol, args.patterns)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for name, problems in report.files:
            if problems:
                print(f"FAIL {name}")
                shown = problems if args.all else problems[:_SHOWN]
                for p in shown:
                    print(f"     {p}")
                if len(problems) > len(shown):
                    print(f"     ... and {len(problems) - len(shown)} more (--all shows them)")
        print(f"{report.passed} passed, {report.failed} failed")
    return 0 if report.failed == 0 else 1


def _sample(args: argparse.Namespace) -> int:
    from uploader.sample import write_study

    files = write_study(args.output, slices=args.slices, size=args.size)
    print(f"wrote {len(files)} DICOM files (and a note) under {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    work = args.workdir or Path(tempfile.mkdtemp(prefix="uploader-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    key = work / "site.key"
    sample, out, links = work / "incoming", work / "deidentified", work / "link"
    print("== De-identification on its own (the core library, as a command)")
    print(f"1. a sample RT study with planted identifiers -> {sample}")
    _sample(argparse.Namespace(output=sample, slices=8, size=64))
    protocol = Path(__file__).resolve().parent.parent / "protocols" / "example-prostate.yaml"
    argv = ["anonymise", str(sample), str(out), "--site", "RXH", "--mapping-dir", str(links)]
    argv += ["--key-file", str(key)] if key.exists() else ["--generate-key", str(key)]
    if protocol.exists():
        argv += ["--protocol", str(protocol)]
    print(f"2. uploader {' '.join(argv)}")
    rc = main(argv)
    print(f"3. uploader verify {out}")
    verify_argv = ["verify", str(out)] + (
        ["--protocol", str(protocol)] if protocol.exists() else []
    )
    rc_verify = main(verify_argv)
    print(f"4. uploader verify {sample}  (the input: must fail)")
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        rc_input = main(["verify", str(sample)])
    print("   " + captured.getvalue().strip().splitlines()[-1] + " (each file lists what is wrong)")
    from uploader.demo import run_pipeline

    ok = rc == 0 and rc_verify == 0 and rc_input == 1 and run_pipeline(work / "pipeline")
    size = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) / (1 << 20)
    print("demo " + ("passed" if ok else "FAILED") + f"; everything is under {work}")
    print(f"   it holds {size:.1f} MiB of sample data (fake patients): `rm -r {work}` removes it")
    return 0 if ok else 1
