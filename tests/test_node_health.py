"""A part that stops or keeps failing is never hidden: the health file, the healthcheck script
and `uploader status` name it. A bad configuration creates nothing and lists every problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from uploader.health import Health, read_health
from uploader.relay import Endpoint, Route, listening, parse_route
from uploader.relay import start_thread as relay_thread

from .conftest import ROOT, run_cli
from .peers import wait_for


def _healthcheck(data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UPLOADER_DATA": str(data)}
    env.pop("UPLOADER_HEALTH_URL", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy/healthcheck.py")],
        capture_output=True, text=True, env=env, check=False, timeout=30,
    )  # fmt: skip


@pytest.mark.integration
def test_a_stopped_thread_and_a_part_that_keeps_failing_turn_the_node_unhealthy(
    tmp_path: Path,
) -> None:
    assert _healthcheck(tmp_path).returncode == 1  # not running: no health file
    health = Health(tmp_path)
    worker = health.component("pipeline")
    finished = threading.Thread(target=lambda: None, name="folder")
    finished.start()
    health.watch_thread("folder", finished)
    worker.beat()
    finished.join()
    health.write()
    check = _healthcheck(tmp_path)
    assert check.returncode == 1 and "folder: stopped: its thread ended" in check.stdout
    assert read_health(tmp_path) == ["folder: stopped: its thread ended"]

    health = Health(tmp_path)
    worker = health.component("push", fail_after=3)
    worker.failed("ConnectionError")
    worker.failed("ConnectionError")
    health.write()
    assert _healthcheck(tmp_path).returncode == 0  # two failures: still trying
    worker.failed("ConnectionError")
    health.write()
    assert read_health(tmp_path) == ["push: failing: ConnectionError (3 times in a row)"]
    worker.beat()
    health.write()
    assert _healthcheck(tmp_path).returncode == 0


def test_a_probe_a_stuck_part_and_a_stale_health_file_are_reported(tmp_path: Path) -> None:
    health = Health(tmp_path)
    health.probe("folder", lambda: "cannot read /incoming: Permission denied")
    stuck = health.component("pipeline", stale_after_s=0.05)
    stuck.beat()
    time.sleep(0.1)
    health.write()
    problems = read_health(tmp_path) or []
    assert "folder: failing: cannot read /incoming: Permission denied" in problems
    assert any(p.startswith("pipeline: stuck: no sign of life") for p in problems)
    state = json.loads((tmp_path / "health.json").read_text())
    assert read_health(tmp_path, now=state["written"] + 120)[-1].startswith(  # type: ignore[index]
        "the node's health monitor has not written"
    )


@pytest.mark.integration
def test_an_empty_configuration_creates_nothing_and_every_problem_is_listed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({
        "node": {"data_dir": str(data), "key_file": str(tmp_path / "no.key"),
                 "protocols_dir": str(tmp_path / "none")},
        "forward": {"ca_bundle": str(tmp_path / "no-ca.pem"),
                    "token_file": str(tmp_path / "no-token")},
    }))  # fmt: skip
    result = run_cli("identifiable", "--config", config)
    assert result.returncode == 2
    for missing in ("no.key", "no-ca.pem", "no-token"):
        assert missing in result.stderr, result.stderr
    assert "3 problems" in result.stderr and "Traceback" not in result.stderr
    assert not data.exists()  # no store, no spool folders, no 512 MiB journal
    bad = tmp_path / "bad.yaml"
    bad.write_text("scp: {port: -1, ae_title: WAY_TOO_LONG_AE_TITLE}\nfolder: {nope: 1}\n")
    result = run_cli("identifiable", "--config", bad)
    assert result.returncode == 2 and "3 problems" in result.stderr, result.stderr
    for key in ("scp.port", "scp.ae_title", "folder.nope"):
        assert key in result.stderr


@pytest.mark.integration
def test_the_anonymised_node_lists_every_missing_file_before_creating_anything(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "anon.yaml"
    config.write_text(yaml.safe_dump({
        "node": {"data_dir": str(data)},
        "intake": {"tls_cert": str(tmp_path / "c.pem"), "tls_key": str(tmp_path / "k.pem"),
                   "token_file": str(tmp_path / "t")},
    }))  # fmt: skip
    result = run_cli("anonymised", "--config", config)
    assert result.returncode == 2 and "3 problems" in result.stderr, result.stderr
    assert not data.exists()


@pytest.mark.integration
def test_the_gateway_relay_parses_routes_and_sees_its_listening_sides(tmp_path: Path) -> None:
    assert parse_route("11112=unix:/links/scp.sock") == Route(
        Endpoint("", 11112), Endpoint(path="/links/scp.sock")
    )
    assert parse_route("127.0.0.1:8443=unix:/l/f.sock").listen == Endpoint("127.0.0.1", 8443)
    assert parse_route("unix:/l/p.sock=pacs:104").target == Endpoint("pacs", 104)
    for bad in ("oops", "11112=", "unix:rel.sock=h:1", "1=h:99999", "=h:1"):
        with pytest.raises(ValueError, match="LISTEN=TARGET"):
            parse_route(bad)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening([parse_route(f"{port}=h:1")])
    assert not listening([parse_route(f"{port}=h:1")])
    path = tmp_path / "x.sock"
    with socket.socket(socket.AF_UNIX) as u:
        u.bind(str(path))
        assert not listening([parse_route(f"unix:{path}=h:1")])  # bound, not yet listening
        u.listen()
        assert listening([parse_route(f"unix:{path}=h:1")])
    relay = subprocess.run(
        [sys.executable, "-m", "uploader.relay", "--check", "oops"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert relay.returncode == 2 and "LISTEN=TARGET" in relay.stderr


def test_a_link_through_a_socket_file_carries_bytes_both_ways(tmp_path: Path) -> None:
    """gateway side: TCP port -> socket file; node side: socket file -> its loopback port."""
    import socket

    echo = socket.create_server(("127.0.0.1", 0))
    echo_port = echo.getsockname()[1]

    def answer() -> None:
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data[::-1])

    threading.Thread(target=answer, daemon=True).start()
    sock = tmp_path / "scp.sock"
    sock.touch()  # a stale file where the socket goes is not a socket: left, and listen fails
    stop = threading.Event()
    failing = relay_thread([parse_route(f"unix:{sock}=127.0.0.1:{echo_port}")], stop)
    failing.start()
    failing.join(timeout=10)
    assert not failing.is_alive() and sock.read_bytes() == b""
    sock.unlink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        front = probe.getsockname()[1]
    threads = [
        relay_thread([parse_route(f"unix:{sock}=127.0.0.1:{echo_port}")], stop),
        relay_thread([parse_route(f"127.0.0.1:{front}=unix:{sock}")], stop),
    ]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: listening([parse_route(f"127.0.0.1:{front}=h:1")]), 10, "front", 0.05)
        with socket.create_connection(("127.0.0.1", front), timeout=10) as c:
            c.sendall(b"DICOM")
            assert c.recv(5) == b"MOCID"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        echo.close()
    assert not any(t.is_alive() for t in threads)


def test_the_watched_folder_beats_its_health_part_and_names_folder_trouble_without_file_names(
    tmp_path: Path,
) -> None:
    from identifiable_node.config import FolderSettings
    from identifiable_node.folder import FolderWatcher
    from identifiable_node.ingest import Ingestor
    from identifiable_node.store import Store
    from uploader.store.spool import Spool

    incoming, data = tmp_path / "incoming", tmp_path / "data"
    incoming.write_text("a file where the folder should be")  # the folder cannot be scanned
    health = Health(data)
    part = health.component("folder", stale_after_s=60)
    settings = FolderSettings(path=incoming, stable_s=0, watch_events=False, poll_interval_s=0.05)
    ingestor = Ingestor(Store(data / "node.sqlite"), Spool(data))
    watcher = FolderWatcher(settings, ingestor, set(), health=part)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    health.watch_thread("folder", thread)
    thread.start()
    try:
        wait_for(lambda: not health.snapshot()["healthy"], 10, "the folder part failing", 0.05)
        report = health.snapshot()["components"]["folder"]
        assert (
            report["state"] == "failing"
            and "cannot be scanned: FileExistsError" in report["reason"]
        )
        assert "incoming" not in report["reason"]  # no path: it may name a patient
        incoming.unlink()  # the watcher makes the folder: its next scan is good
        wait_for(lambda: health.snapshot()["healthy"], 10, "the folder part healthy again", 0.05)
        assert health.snapshot()["components"]["folder"]["state"] == "ok"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert health.snapshot()["components"]["folder"]["state"] == "stopped"
