"""``uploader demo``: the whole pipeline on this machine, no Docker, with a generated study.

Both nodes run on loopback with an embedded configuration (SQLite, a directory as the remote
repository, plain HTTP on 127.0.0.1 only, auto-approval); a sample study full of fake patient
details is dropped into the watched folder; every step is printed as it happens.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from uploader.deid.pseudonyms import generate_key
from uploader.sample import write_study

_PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "example-prostate.yaml"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _states(db: Path) -> list[tuple[int, str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return [
                (r[0], r[1], r[2] or "")
                for r in conn.execute("SELECT id, state, reason FROM studies")
            ]
        except sqlite3.OperationalError:
            return []


def _configs(work: Path) -> tuple[Path, Path, Path]:
    protocols = work / "protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    text = _PROTOCOL.read_text(encoding="utf-8")
    (protocols / "example-prostate.yaml").write_text(
        text.replace("time_point: baseline", "time_point: baseline\nauto_approve: true")
    )
    generate_key(work / "site.key")
    (work / "token").write_text(os.urandom(16).hex())
    (work / "forward.key").write_text(os.urandom(32).hex())  # both nodes hold it
    port = _port()
    anon = {
        "node": {"data_dir": str(work / "anonymised"), "protocols_dir": str(protocols)},
        "intake": {
            "host": "127.0.0.1",
            "port": port,
            "token_file": str(work / "token"),
            "forward_key_file": str(work / "forward.key"),
            "allow_plain_http": True,
        },
        "targets": {"repository": {"type": "directory", "path": str(work / "repository")}},
        "default_target": "repository",
        "workers": {"idle_s": 0.2},
    }
    ident = {
        "node": {
            "data_dir": str(work / "identifiable"),
            "key_file": str(work / "site.key"),
            "site": "RXH",
            "protocols_dir": str(protocols),
            "default_protocol": "PACE-C",
        },
        "folder": {"path": str(work / "incoming"), "poll_interval_s": 0.5, "stable_s": 0.5},
        "scp": {"host": "127.0.0.1", "port": 0, "journal_mb": 8},  # not the 512 MiB default
        # the demo approves on both sides: the sample's planted names are struck and forwarded
        "study": {"quiet_period_s": 2, "complete_timeout_s": 10, "review_when_cleaned": False},
        "forward": {
            "url": f"http://127.0.0.1:{port}/dicom-web",
            "allow_plain_http": True,
            "token_file": str(work / "token"),
            "key_file": str(work / "forward.key"),
            "manifest_url": f"http://127.0.0.1:{port}/manifests",
        },
        "workers": {"idle_s": 0.2},
    }
    a, i = work / "anonymised.yaml", work / "identifiable.yaml"
    a.write_text(yaml.safe_dump(anon))
    i.write_text(yaml.safe_dump(ident))
    return i, a, protocols


def _start(module: str, config: Path, data: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    cmd = [sys.executable, "-m", module, "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=out, stderr=out)  # noqa: S603 - our own interpreter and module
    end = time.time() + 30
    while not (data / "node.ready").exists():
        if proc.poll() is not None or time.time() > end:
            raise RuntimeError(f"{module} did not start: see {log}")
        time.sleep(0.1)
    return proc


def run_pipeline(work: Path) -> bool:
    """Run both nodes on a sample study; True when it reached the repository, verified."""
    ident_cfg, anon_cfg, protocols = _configs(work)
    print(f"\n== The whole pipeline (both nodes on 127.0.0.1; everything under {work})")
    procs = []
    try:
        procs.append(
            _start("anonymised_node", anon_cfg, work / "anonymised", work / "anonymised.log")
        )
        print("1. anonymised node: intake on loopback (plain HTTP, demo only), target: a directory")
        procs.append(
            _start("identifiable_node", ident_cfg, work / "identifiable", work / "identifiable.log")
        )
        print("2. identifiable node: watching", work / "incoming")
        drop = work / "incoming" / "PACE-C"
        write_study(work / "export", slices=8)
        shutil.copytree(work / "export", drop, dirs_exist_ok=True)
        print(f"3. a sample RT study (fake patient) dropped into {drop}")
        return _follow(work, protocols)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _follow(work: Path, protocols: Path) -> bool:
    seen: set[tuple[str, str]] = set()
    end = time.time() + 120
    while time.time() < end:
        for node, db in (
            ("identifiable", work / "identifiable" / "node.sqlite"),
            ("anonymised", work / "anonymised" / "anonymised.sqlite"),
        ):
            for _id, state, reason in _states(db):
                if (node, state) not in seen:
                    seen.add((node, state))
                    print(f"   {node:12s} study -> {state}" + (f" ({reason})" if reason else ""))
        if ("anonymised", "uploaded") in seen:
            break
        if any(
            s in seen for s in (("identifiable", "needs_review"), ("identifiable", "quarantined"))
        ):
            print(
                "   the study needs attention: see `uploader status --config",
                work / "identifiable.yaml`",
            )
            return False
        time.sleep(0.2)
    else:
        print("   timed out: see the logs", work / "identifiable.log", work / "anonymised.log")
        return False
    files = sorted((work / "repository").rglob("*.dcm"))
    print(f"4. in the repository: {len(files)} files under {work / 'repository'}")
    for folder in sorted({f.parent.relative_to(work / "repository") for f in files}):
        print(f"   {folder}/")
    check = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "uploader",
            "verify",
            str(work / "repository"),
            "--protocol",
            str(protocols / "example-prostate.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"5. uploader verify on the repository: {check.stdout.strip().splitlines()[-1]}")
    print(
        f"   logs: {work / 'identifiable.log'}, {work / 'anonymised.log'}; "
        f"status: uploader status --config {work / 'identifiable.yaml'}"
    )
    summary = {"files": len(files), "verify_rc": check.returncode}
    (work / "demo-result.json").write_text(json.dumps(summary))
    return check.returncode == 0 and len(files) > 0
