"""The watched folder as an attacker (or an unlucky hospital) fills it: symbolic links to files
and folders outside, a FIFO, a socket, a name with a newline, a file only root can read, a file
that cannot be moved away, a folder on another file system. Each is reported and left alone,
nothing outside the folder is read, and the valid files beside them are taken.

These drive the real watcher with the real ingest, store and spool (no node process: the scan
is called directly, so each case is one scan); the node end to end is in
``test_identifiable_node_survives_hostile_input``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from identifiable_node.config import FolderSettings
from identifiable_node.folder import FolderWatcher, folder_problems, read_health
from identifiable_node.ingest import Ingestor
from identifiable_node.store import Store
from uploader.sample import write_study
from uploader.store.spool import Spool

from .peers import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _watcher(incoming: Path, data: Path, **settings: object) -> FolderWatcher:
    spool = Spool(data)
    ingestor = Ingestor(Store(data / "node.sqlite"), spool)
    folder = FolderSettings(path=incoming, stable_s=0, watch_events=False, **settings)
    return FolderWatcher(folder, ingestor, {"PACE-C"})


def _dicom(tmp: Path, n: int = 3) -> list[Path]:
    return [p for p in write_study(tmp / "study", slices=n) if p.parent.name == "CT"]


def _scan_twice(watcher: FolderWatcher) -> None:
    watcher.scan()  # sees each file
    time.sleep(0.01)
    watcher.scan()  # takes what held still


def _indexed(watcher: FolderWatcher) -> int:
    return len(watcher.ingestor.store.query("SELECT sop_uid FROM instances"))


def _quarantined(data: Path) -> list[Path]:
    return [p for p in (data / "quarantine").rglob("*") if p.is_file()]


def test_links_to_files_and_folders_outside_are_never_followed(tmp_path: Path) -> None:
    incoming, data = tmp_path / "incoming", tmp_path / "data"
    incoming.mkdir()
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:SECRET-LINE\n")
    ct = _dicom(tmp_path, 3)
    (incoming / "a-passwd").symlink_to(secret)  # a link to a file that is not DICOM
    (incoming / "b-outside.dcm").symlink_to(ct[0])  # a link to DICOM outside the folder
    (incoming / "c-folder").symlink_to(ct[0].parent, target_is_directory=True)
    (incoming / "d-dangling").symlink_to(tmp_path / "nothing")
    shutil.copy(ct[1], incoming / "valid.dcm")
    watcher = _watcher(incoming, data)
    _scan_twice(watcher)
    assert _indexed(watcher) == 1  # the valid file only, not the linked one nor the folder's
    assert not (incoming / "valid.dcm").exists()
    assert (data / "processed" / "valid.dcm").exists()
    for link in ("a-passwd", "b-outside.dcm", "c-folder", "d-dangling"):
        assert (incoming / link).is_symlink()  # left where it is
    assert not any("SECRET-LINE" in p.read_text(errors="replace") for p in _quarantined(data))
    assert secret.read_text() == "root:x:0:0:SECRET-LINE\n" and ct[0].exists()
    health = watcher.health()
    links = [e for e in health["entries"] if "symbolic link" in e]
    assert len(links) == 4 and health["left_alone"] == 4
    assert health["taken"] == 1


def test_a_fifo_and_a_socket_are_skipped_without_opening_them(tmp_path: Path) -> None:
    incoming, data = tmp_path / "incoming", tmp_path / "data"
    (incoming / "PACE-C").mkdir(parents=True)
    os.mkfifo(incoming / "PACE-C" / "a-fifo.dcm")  # opening it would block for ever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(incoming / "PACE-C" / "b-socket"))
    ct = _dicom(tmp_path, 14)
    for i, path in enumerate(ct):  # 14 files behind the FIFO, in name order
        shutil.copy(path, incoming / "PACE-C" / f"c-{i:02d}.dcm")
    watcher = _watcher(incoming, data)
    done = threading.Event()

    def scans() -> None:
        _scan_twice(watcher)
        done.set()

    started = time.monotonic()
    threading.Thread(target=scans, daemon=True).start()
    assert done.wait(1.0), "the scan is stuck on the FIFO"
    assert time.monotonic() - started < 1.0
    shutil.copy(ct[0].parent.parent / "RS.dcm", incoming / "PACE-C" / "z-after.dcm")
    _scan_twice(watcher)  # a file dropped after the FIFO is taken too
    sock.close()
    assert _indexed(watcher) == 15
    entries = watcher.health()["entries"]
    assert any(e.startswith("PACE-C/a-fifo.dcm: a FIFO: skipped, never opened") for e in entries)
    assert any(e.startswith("PACE-C/b-socket: a socket") for e in entries)
    assert (incoming / "PACE-C" / "a-fifo.dcm").exists()


def test_names_with_a_newline_are_taken_and_reported_escaped(tmp_path: Path) -> None:
    incoming, data = tmp_path / "incoming", tmp_path / "data"
    incoming.mkdir()
    ct = _dicom(tmp_path, 1)
    shutil.copy(ct[0], incoming / "slice\nnumber one.dcm")
    (incoming / "notes\n.txt").write_text("not DICOM")
    os.mkfifo(incoming / "pipe\nname")
    watcher = _watcher(incoming, data)
    _scan_twice(watcher)
    assert _indexed(watcher) == 1
    assert (data / "processed" / "slice\nnumber one.dcm").exists()
    reasons = [p for p in _quarantined(data) if p.name.endswith(".reason.txt")]
    assert len(reasons) == 1
    text = reasons[0].read_text()
    assert text.startswith("notes\\x0a.txt: not a readable DICOM") and text.count("\n") == 1
    assert watcher.health()["entries"] == ["pipe\\x0aname: a FIFO: skipped, never opened"]


def test_taken_files_move_to_another_file_system(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        if os.environ.get("CI"):
            pytest.fail("/dev/shm is not a separate file system here")
        pytest.skip("no second file system")
    incoming = Path(os.environ.get("SHM_DIR", shm)) / f"incoming-{os.getpid()}-{time.time_ns()}"
    data = tmp_path / "data"
    try:
        (incoming / "PACE-C").mkdir(parents=True)
        ct = _dicom(tmp_path, 2)
        for path in ct:
            shutil.copy(path, incoming / "PACE-C" / path.name)
        (incoming / "PACE-C" / "notes.txt").write_text("not DICOM")
        watcher = _watcher(incoming, data)
        _scan_twice(watcher)
        assert _indexed(watcher) == 2
        assert sorted(p.name for p in (data / "processed" / "PACE-C").iterdir()) == sorted(
            p.name for p in ct
        )
        assert [p.read_bytes() for p in sorted((data / "processed" / "PACE-C").iterdir())] == [
            p.read_bytes() for p in sorted(ct, key=lambda p: p.name)
        ]
        assert not any((incoming / "PACE-C").iterdir())  # sources removed, quarantined one too
        assert watcher.health()["left_alone"] == 0
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


_AS_NOBODY = """
import json, sys, time
from pathlib import Path
from identifiable_node.config import FolderSettings
from identifiable_node.folder import FolderWatcher
from identifiable_node.ingest import Ingestor
from identifiable_node.store import Store
from uploader.store.spool import Spool

incoming, data = Path(sys.argv[1]), Path(sys.argv[2])
spool = Spool(data)
watcher = FolderWatcher(
    FolderSettings(path=incoming, stable_s=0, watch_events=False),
    Ingestor(Store(data / "node.sqlite"), spool), set())
for _ in range(4):
    watcher.scan()
    time.sleep(0.01)
rows = watcher.ingestor.store.query("SELECT COUNT(*) n FROM instances")
print(json.dumps({"health": watcher.health(), "indexed": rows[0]["n"]}))
"""


@pytest.mark.integration
def test_unreadable_and_unmovable_files_are_reported_once_and_left_as_non_root(
    tmp_path: Path,
) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root (to drop to nobody) and setpriv")
    base = Path("/tmp") / f"folder-nobody-{os.getpid()}-{time.time_ns()}"  # nobody can reach
    try:
        incoming, data = base / "incoming", base / "data"
        (incoming / "locked").mkdir(parents=True)
        data.mkdir()
        ct = _dicom(tmp_path, 3)
        shutil.copy(ct[0], incoming / "a-unreadable.dcm")
        os.chmod(incoming / "a-unreadable.dcm", 0o600)  # root's, not readable by nobody
        shutil.copy(ct[1], incoming / "locked" / "b-unmovable.dcm")
        os.chmod(incoming / "locked" / "b-unmovable.dcm", 0o644)
        shutil.copy(ct[2], incoming / "c-valid.dcm")
        for path in (base, incoming, data, incoming / "c-valid.dcm"):
            os.chown(path, 65534, 65534)
        os.chmod(base, 0o755)
        result = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", _AS_NOBODY, str(incoming), str(data)],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout)
        health = report["health"]
        assert report["indexed"] == 2  # the valid one, and the one that cannot be moved away
        assert health["taken"] == 2  # four scans, yet the unmovable one was taken only once
        assert sorted(health["entries"]) == [
            "a-unreadable.dcm: cannot be read (permission denied): left in place until it changes",
            "locked/b-unmovable.dcm: stored, but cannot be moved away (permission denied): "
            "left in place until it changes",
        ]
        assert result.stderr.count("left alone") == 2  # each told once, not on every scan
        assert (incoming / "a-unreadable.dcm").exists()
        assert (incoming / "locked" / "b-unmovable.dcm").exists()
        assert not (incoming / "c-valid.dcm").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_failing_scan_is_told_and_the_thread_says_when_it_stops(tmp_path: Path) -> None:
    incoming, data = tmp_path / "incoming", tmp_path / "data"
    watcher = _watcher(incoming, data, poll_interval_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = wait_for(lambda: read_health(data), 5, "the first health report")
        assert first["alive"] and folder_problems(first) == []
        shutil.rmtree(incoming)
        incoming.write_text("the share was replaced by a file")  # the scan cannot open it
        state = wait_for(
            lambda: (h := read_health(data)) and h["failing_scans"] >= 3 and h,
            5,
            "three failed scans in a row",
        )
        assert state["alive"]
        problems = folder_problems(state)
        assert len(problems) == 1 and "scan(s) in a row failed: the scan failed:" in problems[0]
        incoming.unlink()
        wait_for(  # it recovers by itself
            lambda: read_health(data)["failing_scans"] == 0, 5, "a good scan after the failures"
        )
    finally:
        stop.set()
        watcher.wake.set()
        thread.join(5)
    state = read_health(data)
    assert state is not None and not state["alive"]
    assert folder_problems(state) == ["the watched folder's thread has stopped"]
    stale = {**state, "alive": True, "last_scan": time.time() - 3600}
    assert folder_problems(stale) == [
        "the watched folder has not finished a scan for over a minute"
    ]
