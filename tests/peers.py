"""Real peers started by tests: Orthanc (PACS and DICOMweb repository), stunnel for TLS in
front of it (Orthanc's own HTTPS is broken on bookworm), certificates made in the test, and the
identifiable node itself as a subprocess. Every process is terminated, waited for, then killed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from .conftest import integration_tool

ROOT = Path(__file__).resolve().parent.parent
#: The forwarding key both nodes of a test hold (each writes it into its own folder).
FORWARD_KEY = "test-forwarding-key-" + "5a" * 22


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen[Any], grace: float = 10) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def make_cert(folder: Path, name: str = "localhost", ip: str = "127.0.0.1") -> Path:
    """A self-signed certificate for localhost/127.0.0.1 (and ``ip``); returns its path (the
    PEM ``name``.pem holds cert then key)."""
    openssl = integration_tool("openssl")
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1"
            + (f",IP:{ip}" if ip != "127.0.0.1" else ""),
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    pem = folder / f"{name}.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert


@dataclass
class Orthanc:
    http: str  # plain loopback URL (for checks)
    https: str  # TLS URL (through stunnel)
    dicom_port: int
    aet: str
    ca: Path
    tls: subprocess.Popen[Any] | None = None
    tls_conf: Path | None = None

    def stop_tls(self) -> None:
        """Take the HTTPS front down (the repository 'stops')."""
        if self.tls is not None:
            self.tls.kill()
            self.tls.wait(10)

    def start_tls(self) -> None:
        """Bring the HTTPS front back on the same port."""
        self.tls = subprocess.Popen(
            [integration_tool("stunnel4"), str(self.tls_conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def instances(self) -> list[str]:
        return list(requests.get(f"{self.http}/instances", timeout=10).json())

    def tags(self, instance: str) -> dict[str, Any]:
        return dict(
            requests.get(f"{self.http}/instances/{instance}/simplified-tags", timeout=10).json()
        )


@contextmanager
def orthanc(
    tmp: Path,
    modalities: dict[str, Any] | None = None,
    aet: str = "ORTHANC",
    https_port: int = 0,
    tls_host: str = "127.0.0.1",
) -> Iterator[Orthanc]:
    """Orthanc on loopback HTTP, with stunnel serving HTTPS on ``tls_host`` (an address of this
    machine: loopback, or the host's side of a test's own container network)."""
    binary = integration_tool("Orthanc")
    stunnel = integration_tool("stunnel4")
    http_port, dicom_port = free_port(), free_port()
    https_port = https_port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "test",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowMove": False,
        "DicomModalities": modalities or {},
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "Ssl": True,
            "Host": f"{tls_host}:{https_port}",
        },
        "HttpTimeout": 60,
    }
    (tmp / "orthanc.json").write_text(json.dumps(config))
    cert = tmp / "localhost.crt"
    if not (tmp / "localhost.pem").exists():  # a test may have made (and trusted) it already
        cert = make_cert(tmp, ip=tls_host)
    (tmp / "stunnel.conf").write_text(
        f"foreground = yes\npid =\n[https]\naccept = {tls_host}:{https_port}\n"
        f"connect = 127.0.0.1:{http_port}\ncert = {tmp / 'localhost.pem'}\n"
    )
    log = (tmp / "orthanc.log").open("w")
    proc = subprocess.Popen([binary, str(tmp / "orthanc.json")], stdout=log, stderr=log)
    tls = subprocess.Popen([stunnel, str(tmp / "stunnel.conf")], stdout=log, stderr=log)
    handle: Orthanc | None = None
    try:
        url = f"http://127.0.0.1:{http_port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/system", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(up, 20, "Orthanc")
        handle = Orthanc(
            url,
            f"https://{tls_host}:{https_port}/dicom-web",
            dicom_port,
            aet,
            cert,
            tls,
            tmp / "stunnel.conf",
        )
        yield handle
    finally:
        if handle is not None and handle.tls is not None:
            stop(handle.tls)
        stop(tls)
        stop(proc)
        log.close()


class _Status:
    """`uploader status --json` of a running node, and waiting for a state."""

    config: Path
    label = "study(ies)"

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "uploader", "status", "--config", str(self.config), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return dict(json.loads(out.stdout))

    def wait_state(self, state: str, n: int = 1, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status())["counts"][state] >= n and s,
            timeout,
            f"{n} {self.label} {state}",
            interval=0.3,
        )


@dataclass
class Node(_Status):
    config: Path
    data: Path
    proc: subprocess.Popen[Any]
    scp_port: int

    def states(self) -> list[str]:
        """Study states read straight from the node's database (fast enough to catch a step)."""
        import sqlite3

        db = self.data / "node.sqlite"
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT state FROM studies")]


def node_config(tmp: Path, forward_url: str, ca: Path | None, **overrides: Any) -> Path:
    protocols = tmp / "protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    (protocols / "prostate.yaml").write_text(
        (ROOT / "protocols" / "example-prostate.yaml").read_text()
    )
    key = tmp / "site.key"
    key.write_text("11" * 32)
    (tmp / "forward.key").write_text(FORWARD_KEY + "\n")
    config: dict[str, Any] = {
        "node": {
            "data_dir": str(tmp / "data"),
            "key_file": str(key),
            "site": "RXH",
            "protocols_dir": str(protocols),
            "default_protocol": "PACE-C",
            "log_level": "INFO",
        },
        "folder": {
            "enabled": True,
            "path": str(tmp / "incoming"),
            "poll_interval_s": 0.5,
            "stable_s": 0.5,
        },
        "scp": {
            "enabled": True,
            "ae_title": "UPLOADER",
            "host": "127.0.0.1",
            "port": 0,
            "journal_mb": 32,
        },
        # the sample plants the patient's name in descriptions: cleaning strikes it, and with
        # review_when_cleaned every study would wait for staff (tested on its own)
        "study": {"quiet_period_s": 1.0, "complete_timeout_s": 5.0, "review_when_cleaned": False},
        "forward": {
            "url": forward_url,
            "ca_bundle": str(ca) if ca else None,
            "backoff_s": 0.2,
            "max_attempts": 3,
            "key_file": str(tmp / "forward.key"),
        },
        "workers": {"lease_s": 5.0, "idle_s": 0.2},
    }
    for dotted, value in overrides.items():
        section, key_name = dotted.split("__")
        config.setdefault(section, {})[key_name] = value
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def node(config: Path) -> Iterator[Node]:
    data = Path(yaml.safe_load(config.read_text())["node"]["data_dir"])
    (data / "node.ready").unlink(missing_ok=True)
    log = (config.parent / "node.log").open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "identifiable_node", "--config", str(config)],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready = wait_for(
            lambda: (data / "node.ready").exists() and (data / "node.ready").read_text(),
            20,
            "the node to start",
        )
        yield Node(config, data, proc, int(json.loads(ready).get("scp_port", 0)))
    finally:
        stop(proc)
        log.close()


def storescu(
    port: int, folder: Path, calling: str = "MODALITY", called: str = "UPLOADER"
) -> subprocess.CompletedProcess[str]:
    tool = integration_tool("storescu")
    return subprocess.run(
        [
            tool,
            "-aet",
            calling,
            "-aec",
            called,
            "+sd",
            "+r",
            "-nh",
            "127.0.0.1",
            str(port),
            str(folder),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


@dataclass
class AnonNode(_Status):
    config: Path
    data: Path
    proc: subprocess.Popen[Any]
    url: str  # https://127.0.0.1:port
    ca: Path
    token: str
    review_token: str


def anon_config(tmp: Path, target: dict[str, Any], **protocol_lines: str) -> tuple[Path, Path, int]:
    """An anonymised node configuration with TLS and tokens; returns (config, cert, port)."""
    tmp.mkdir(parents=True, exist_ok=True)
    cert = make_cert(tmp, "intake")
    (tmp / "token").write_text("intake-token-123\n")
    (tmp / "review").write_text("review-token-456\n")
    (tmp / "forward.key").write_text(FORWARD_KEY + "\n")
    protocols = tmp / "protocols"
    protocols.mkdir(exist_ok=True)
    text = (ROOT / "protocols" / "example-prostate.yaml").read_text()
    for key, value in protocol_lines.items():
        text = text.replace("time_point: baseline", f"time_point: baseline\n{key}: {value}")
    (protocols / "prostate.yaml").write_text(text)
    port = free_port()
    config = {
        "node": {"data_dir": str(tmp / "data"), "protocols_dir": str(protocols)},
        "intake": {
            "host": "127.0.0.1",
            "port": port,
            "tls_cert": str(cert),
            "tls_key": str(tmp / "intake.key"),
            "token_file": str(tmp / "token"),
            "review_token_file": str(tmp / "review"),
            "forward_key_file": str(tmp / "forward.key"),
        },
        "targets": {"repo": target},
        "default_target": "repo",
        "push": {"backoff_s": 0.2, "max_attempts": 50},
        "workers": {"lease_s": 5.0, "idle_s": 0.2},
    }
    path = tmp / "anon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, cert, port


@contextmanager
def anon_node(config: Path) -> Iterator[AnonNode]:
    data = Path(yaml.safe_load(config.read_text())["node"]["data_dir"])
    (data / "node.ready").unlink(missing_ok=True)
    settings = yaml.safe_load(config.read_text())
    log = (config.parent / "anon.log").open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "anonymised_node", "--config", str(config)],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for((data / "node.ready").exists, 20, "the anonymised node to start")
        intake = settings["intake"]
        yield AnonNode(
            config,
            data,
            proc,
            f"https://127.0.0.1:{intake['port']}",
            Path(intake["tls_cert"]),
            Path(intake["token_file"]).read_text().strip(),
            Path(intake["review_token_file"]).read_text().strip(),
        )
    finally:
        stop(proc)
        log.close()
