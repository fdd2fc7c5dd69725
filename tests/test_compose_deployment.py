"""The Compose deployment, built and run for real, as the guide (docs/deployment.md) says.

Both images are built from the project's Dockerfile; the stack comes up from its compose.yaml
after deploy/setup.sh, with only what the guide tells IT to edit changed (the trial, the
repository's URL, token and CA bundle; the quiet period, to keep the test short). A study comes
in through the watched folder and another through C-STORE, staff approve both through the
anonymised node's API, and both arrive in an Orthanc behind TLS (a private CA) acting as the
trial's repository, where `uploader verify` passes on what arrived. The engine is a private
dockerd (tests/compose_engine.py). Only loopback and the test's own networks are used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from uploader.sample import Patient, write_study
from uploader.version import __version__

from .compose_engine import Engine, engine, import_base_image
from .conftest import ROOT, run_cli
from .peers import Orthanc, free_port, orthanc, storescu, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROJECT = "sdu-compose-test"
ROIS = ["Prostate", "Rectum", "Bladder", "PTV_1"]
SOURCES = (".env", "compose.yaml", "Dockerfile", "pyproject.toml", "constraints.txt", "README.md",
           "uploader", "identifiable_node", "anonymised_node", "deploy", "protocols")  # fmt: skip
MACHINE_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class Stack:
    engine: Engine
    repo: Path  # the copy of the project the stack runs from
    repository: Orthanc
    dicom_port: int
    review_port: int
    timings: dict[str, float]
    pages_port: int = 0  # a free port too: nothing on this host may hold 8444
    identifiable_pages_port: int = 0  # the gateway's 8445, published on 127.0.0.1

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        env = self.engine.env(
            UPLOADER_DICOM_PORT=str(self.dicom_port),
            UPLOADER_REVIEW_PORT=str(self.review_port),
            UPLOADER_PAGES_PORT=str(self.pages_port),
            UPLOADER_IDENTIFIABLE_PAGES_PORT=str(self.identifiable_pages_port),
            UPLOADER_VERSION=__version__,  # the tag _build gave the images (.env says the same)
        )
        done = subprocess.run(
            [str(Path(sys.executable).parent / "docker-compose"), "-p", PROJECT, *args],
            cwd=self.repo, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            logs = subprocess.run(
                [str(Path(sys.executable).parent / "docker-compose"), "-p", PROJECT, "logs"],
                cwd=self.repo, env=env, capture_output=True, text=True, check=False,
            ).stdout[-4000:]  # fmt: skip
            raise AssertionError(f"compose {' '.join(args)}: {done.stderr[-2000:]}\n{logs}")
        return done.stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def inspect(self, service: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(
            self.engine.docker("inspect", self.container(service))
        )
        return found[0]

    def exec(
        self, service: str, *cmd: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "docker-compose"), "-p", PROJECT, "exec", "-T",
             service, *cmd],
            cwd=self.repo, env=self.engine.env(), capture_output=True, text=True, timeout=60,
            check=False, input=stdin,
        )  # fmt: skip

    def api(self, path: str, **body: Any) -> Any:
        token = (self.repo / "deploy/secrets/review_token").read_text().strip()
        url = f"https://127.0.0.1:{self.review_port}/api/studies{path}"
        ca = str(self.repo / "deploy/tls/intake.crt")
        auth = {"Authorization": f"Bearer {token}"}
        if body:
            r = requests.post(url, json=body, headers=auth, verify=ca, timeout=30)
        else:
            r = requests.get(url, headers=auth, verify=ca, timeout=30)
        r.raise_for_status()
        return r.json()

    def studies(self) -> list[dict[str, Any]]:
        try:
            return list(self.api(""))
        except requests.RequestException:
            return []


def _copy_project(target: Path) -> None:
    target.mkdir(parents=True)
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            ignore = shutil.ignore_patterns("secrets", "tls", "incoming", "__pycache__", "*.pyc")
            shutil.copytree(src, target / name, ignore=ignore)
        else:
            shutil.copy2(src, target / name)


def _edit_yaml(path: Path, **sections: dict[str, Any]) -> None:
    """What the guide tells IT to edit, changed in the shipped file (the rest stays as shipped)."""
    config = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        node: dict[str, Any] = config.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                node.setdefault(key, {}).update(value)
            else:
                node[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _build(eng: Engine, repo: Path) -> None:
    """Both images from the project's Dockerfile. The machine's CA bundle goes in only as the
    pip step's build secret (this machine's proxy re-signs TLS): the image does not keep it."""
    secret = ["--secret", f"id=pip_ca,src={MACHINE_CA}"] if MACHINE_CA.exists() else []
    for target in ("identifiable", "anonymised"):
        eng.docker(
            "build", "--network", "host", *secret, "--target", target,
            "-t", f"secure-dicom-uploader/{target}-node:{__version__}", str(repo),
            timeout=600,
        )  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with engine() as eng:
        timings["engine"] = time.monotonic() - t0
        work = tmp_path_factory.mktemp("compose")
        repo = work / "repo"
        _copy_project(repo)
        setup = subprocess.run(
            [str(repo / "deploy/setup.sh")], capture_output=True, text=True, check=False
        )
        assert setup.returncode == 0, setup.stderr
        import_base_image(eng)
        timings["base image"] = time.monotonic() - t0 - timings["engine"]
        t1 = time.monotonic()
        _build(eng, repo)
        timings["builds"] = time.monotonic() - t1
        handle = Stack(eng, repo, None, free_port(), free_port(), timings, free_port(), free_port())  # type: ignore[arg-type]
        try:
            handle.compose("create")  # the networks exist from here: the repository needs one
            net = json.loads(eng.docker("network", "inspect", f"{PROJECT}_outbound"))[0]
            gateway = net["IPAM"]["Config"][0]["Gateway"]  # this host, seen from `outbound`
            with orthanc(work / "repository", tls_host=gateway) as repository:
                handle.repository = repository
                shutil.copy(repository.ca, repo / "deploy/tls/repository-ca.pem")
                (repo / "deploy/secrets/repository_token").write_text("repository-token\n")
                _edit_yaml(
                    repo / "deploy/anonymised.yaml",
                    targets={"repository": {"url": repository.https}},
                )
                _edit_yaml(
                    repo / "deploy/identifiable.yaml",
                    node={"default_protocol": "PACE-C"},
                    study={
                        "quiet_period_s": 12,
                        "complete_timeout_s": 120,
                    },  # > folder poll + stable
                )
                t2 = time.monotonic()
                handle.compose("up", "-d", "--wait", "--wait-timeout", "240", timeout=300)
                timings["up"] = time.monotonic() - t2
                yield handle
        finally:
            logs = handle.compose("logs", "--no-color", check=False)
            (work / "compose.log").write_text(logs)
            print(f"compose logs: {work / 'compose.log'}")
            t3 = time.monotonic()
            handle.compose("down", "--volumes", "--remove-orphans", "--rmi", "all", check=False)
            timings["down"] = time.monotonic() - t3
            print("compose test timings (s):", {k: round(v, 1) for k, v in timings.items()})


def _study_files(root: Path, patient: Patient) -> list[Path]:
    """Every file of a 3-slice CT + RTSTRUCT/RTPLAN/RTDOSE study (CT slices have no suffix)."""
    write_study(root, slices=3, rois=ROIS, patient=patient)
    for readme in root.rglob("README.txt"):
        readme.unlink()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) == 3 + 3 and len({f.name for f in files}) == len(files)
    return files


def _approve_cleaned(stack: Stack) -> None:
    """Staff on the identifiable node approve a study that waits because cleaning struck the
    sample's planted names from its descriptions (study.review_when_cleaned, the default)."""
    config = "/etc/uploader/identifiable.yaml"
    status = stack.exec("identifiable-node", "uploader", "status", "--json", "--config", config)
    try:
        attention = json.loads(status.stdout).get("attention", [])
    except ValueError:
        return
    for item in attention:
        if item.get("state") == "needs_review" and "cleaning struck" in item.get("reason", ""):
            stack.exec(
                "identifiable-node", "uploader", "review", "approve", str(item["study"]),
                "--config", config, "--by", "radiographer.compose",
            )  # fmt: skip


def _health(stack: Stack, service: str) -> str:
    return str(stack.inspect(service)["State"]["Health"]["Status"])


def test_setup_then_up_gives_healthy_nodes_and_both_doors_reach_the_repository(
    stack: Stack, tmp_path: Path
) -> None:
    for service in ("dicom-gateway", "identifiable-node", "anonymised-node"):
        assert _health(stack, service) == "healthy"
        user = stack.inspect(service)["Config"]["User"]
        assert user == "10001:10001", f"{service} runs as {user!r}"
    # the watched folder, as the guide says: files readable by the node, folders group-writable
    dropped = stack.repo / "deploy/incoming/PACE-C"
    dropped.mkdir(mode=0o2775)
    os.chmod(dropped, 0o2775)
    for f in _study_files(tmp_path / "folder", Patient()):
        shutil.copy(f, dropped / f.name)
    # C-STORE through the DICOM gateway's published port
    rossi = Patient(name="ROSSI^ANNA", patient_id="4857773456", tag="2", accession="ACC99")
    _study_files(tmp_path / "scp", rossi)
    sent = storescu(stack.dicom_port, tmp_path / "scp")
    assert sent.returncode == 0, sent.stderr

    def ready() -> list[dict[str, Any]]:
        _approve_cleaned(stack)
        found = [s for s in stack.studies() if s["state"] == "ready"]
        return found if len(found) == 2 else []

    try:
        waiting = wait_for(ready, 120, "both studies ready for review on the anonymised node", 1)
    except AssertionError:
        status = stack.exec("identifiable-node", "uploader", "status", "--config",
                            "/etc/uploader/identifiable.yaml")  # fmt: skip
        logs = stack.compose(
            "logs", "--no-color", "--tail", "60", "identifiable-node", "anonymised-node"
        )
        raise AssertionError(f"{stack.studies()}\n{status.stdout}{status.stderr}\n{logs}") from None
    assert stack.repository.instances() == []  # nothing leaves before staff approve
    for study in waiting:
        assert stack.api(f"/{study['id']}/approve", by="dr.compose") == {"status": "approved"}
    wait_for(
        lambda: [s["state"] for s in stack.studies()] == ["uploaded", "uploaded"],
        120, "both studies uploaded", 1,
    )  # fmt: skip
    arrived = tmp_path / "arrived"
    arrived.mkdir()
    for i, instance in enumerate(stack.repository.instances()):
        data = requests.get(f"{stack.repository.http}/instances/{instance}/file", timeout=30)
        (arrived / f"{i}.dcm").write_bytes(data.content)
    assert len(list(arrived.iterdir())) == 2 * (3 + 3)
    verified = run_cli("verify", arrived, "--protocol", ROOT / "protocols/example-prostate.yaml")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    text = b"".join(p.read_bytes() for p in arrived.iterdir())
    for phi in (b"9434765919", b"4857773456", b"ROSSI", b"ACC7781234", b"19620314"):
        assert phi not in text
    status = stack.exec(
        "identifiable-node", "uploader", "status", "--config", "/etc/uploader/identifiable.yaml"
    )
    assert "every part healthy" in status.stdout, status.stdout + status.stderr
    assert not list(dropped.iterdir())  # taken and moved (across volumes) to processed/


def test_staff_sign_in_to_the_identifiable_pages_over_https_through_the_gateway(
    stack: Stack,
) -> None:
    """The identifiable node's pages, through the gateway's published port to the node's link:
    HTTPS with the certificate setup.sh made, an account made inside the container, and the
    worklist shows the patient sent by C-STORE to the signed-in user."""
    ident = "/etc/uploader/identifiable.yaml"
    made = stack.exec(
        "identifiable-node", "uploader", "users", "add", "rita.compose", "--role", "reviewer",
        "--password-file", "-", "--config", ident, stdin="compose-reviewer-password\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    web = f"https://127.0.0.1:{stack.identifiable_pages_port}"
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the pages' certificate
        untrusted = requests.Session()
        untrusted.trust_env = False
        untrusted.get(f"{web}/signin", timeout=10)
    s = requests.Session()
    s.trust_env = False  # else the environment's CA bundle wins over verify
    s.verify = str(stack.repo / "deploy/tls/pages.crt")
    form = s.get(f"{web}/signin", timeout=10)
    assert form.status_code == 200 and 'name="password"' in form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    signed_in = s.post(
        f"{web}/signin",
        data={"csrf": csrf[1], "name": "rita.compose", "password": "compose-reviewer-password"},
        timeout=30,
    )
    assert signed_in.status_code == 200 and "Sign out" in signed_in.text, signed_in.text[:500]
    worklist = s.get(f"{web}/", timeout=10)
    assert worklist.status_code == 200 and "4857773456" in worklist.text  # ROSSI, by C-STORE
    assert s.get(f"{web}/users", timeout=10).status_code == 403  # a reviewer, not an admin


def test_down_then_up_keeps_every_study_and_its_state(stack: Stack) -> None:
    before = sorted((s["id"], s["state"], s["subject"]) for s in stack.studies())
    assert len(before) == 2
    ident = "/etc/uploader/identifiable.yaml"
    counts = json.loads(stack.exec("identifiable-node", "uploader", "status", "--config", ident,
                                   "--json").stdout)["counts"]  # fmt: skip
    stack.compose("down", timeout=180)
    assert stack.compose("ps", "-q").strip() == ""
    stack.compose("up", "-d", "--wait", "--wait-timeout", "240", timeout=300)
    after = sorted((s["id"], s["state"], s["subject"]) for s in stack.studies())
    assert after == before
    again = json.loads(stack.exec("identifiable-node", "uploader", "status", "--config", ident,
                                  "--json").stdout)["counts"]  # fmt: skip
    assert again == counts and sum(again.values()) >= 2


def test_the_identifiable_node_has_no_network_and_no_default_route(stack: Stack) -> None:
    """Only loopback inside: no address on any network, no route; its doors are socket files
    the gateway serves. (Read from its settings and its own routing table; no traffic sent.)"""
    node = stack.inspect("identifiable-node")
    assert node["HostConfig"]["NetworkMode"] == "none"
    assert set(node["NetworkSettings"]["Networks"]) <= {"none"}
    assert not node["NetworkSettings"]["Ports"]

    def read(service: str, path: str) -> list[str]:
        done = stack.exec(service, "cat", path)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def default_routes(service: str) -> list[str]:
        return [
            line for line in read(service, "/proc/net/route")[1:] if line.split()[1] == "00000000"
        ]

    interfaces = {
        line.split(":")[0].strip() for line in read("identifiable-node", "/proc/net/dev")[2:]
    }
    assert interfaces == {"lo"}, interfaces
    assert read("identifiable-node", "/proc/net/route")[1:] == []
    assert default_routes("anonymised-node") != []  # the one with a route out (the check works)
    gateway = stack.inspect("dicom-gateway")
    assert set(gateway["NetworkSettings"]["Networks"]) == {
        f"{PROJECT}_hospital",
        f"{PROJECT}_internal",
    }
    assert [m["Destination"] for m in gateway["Mounts"]] == ["/links"]  # no data, no secret
    internal = json.loads(stack.engine.docker("network", "inspect", f"{PROJECT}_internal"))[0]
    assert internal["Internal"] is True


def test_a_watched_folder_without_permissions_turns_the_node_unhealthy(stack: Stack) -> None:
    incoming = stack.repo / "deploy/incoming"
    os.chmod(incoming, 0o000)
    try:
        wait_for(lambda: _health(stack, "identifiable-node") == "unhealthy", 90,
                 "the identifiable node to turn unhealthy", 2)  # fmt: skip
        log = stack.inspect("identifiable-node")["State"]["Health"]["Log"][-1]["Output"]
        assert "folder" in log and "Permission denied" in log, log
        status = stack.exec("identifiable-node", "uploader", "status", "--config",
                            "/etc/uploader/identifiable.yaml").stdout  # fmt: skip
        assert "UNHEALTHY folder" in status, status
    finally:
        os.chmod(incoming, 0o2770)
    wait_for(lambda: _health(stack, "identifiable-node") == "healthy", 90, "healthy again", 2)
