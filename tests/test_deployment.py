"""The deployment files: compose validates, Dockerfiles lint clean, every file they name exists
(after deploy/setup.sh), and the shipped node configurations load."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anonymised_node.config import load_config as load_anonymised
from identifiable_node.config import load_config as load_identifiable
from uploader.relay import parse_routes
from uploader.version import __version__

from .conftest import ROOT, integration_tool


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.mark.integration
def test_compose_validates_and_dockerfiles_lint_clean() -> None:
    compose = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compose.returncode == 0, compose.stderr
    lint = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout
    stages = [
        line.split()[-1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    ]
    assert {"identifiable", "anonymised"} <= set(stages)


@pytest.mark.integration
def test_both_images_are_tagged_with_the_package_version(tmp_path: Path) -> None:
    shown = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "compose.yaml"), "config", "--images"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "UPLOADER_VERSION"},
    )
    assert shown.returncode == 0, shown.stderr
    assert set(shown.stdout.split()) == {
        f"secure-dicom-uploader/identifiable-node:{__version__}",
        f"secure-dicom-uploader/anonymised-node:{__version__}",
    }
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")  # without the shipped .env
    bare = subprocess.run(
        [_tool("docker-compose"), "-f", str(tmp_path / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "UPLOADER_VERSION"},
    )
    assert bare.returncode != 0
    assert "UPLOADER_VERSION is not set (the shipped .env sets it)" in bare.stderr


@pytest.mark.integration
def test_every_file_compose_names_exists_after_setup(tmp_path: Path) -> None:
    integration_tool("openssl")
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT / "deploy",
        copy / "deploy",
        ignore=shutil.ignore_patterns("secrets", "tls", "incoming"),
    )
    for name in ("compose.yaml", "Dockerfile", "protocols"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / name)
    first = subprocess.run(
        [str(copy / "deploy" / "setup.sh")], capture_output=True, text=True, check=True
    )
    assert "created secrets/site_key" in first.stdout
    again = subprocess.run(
        [str(copy / "deploy" / "setup.sh")], capture_output=True, text=True, check=True
    )
    assert again.stdout == ""  # never overwrites
    compose = yaml.safe_load((copy / "compose.yaml").read_text())
    for secret in compose["secrets"].values():
        path = copy / secret["file"]
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o400, path
        assert path.stat().st_uid == 10001, path  # the images' user: Compose keeps host owners
    for service in compose["services"].values():
        assert (copy / service["build"]["context"] / "Dockerfile").exists()
        assert service["build"]["target"] in ("identifiable", "anonymised")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (copy / source).exists(), source
    assert compose["networks"]["internal"]["internal"] is True
    node = compose["services"]["identifiable-node"]
    assert node["network_mode"] == "none" and "networks" not in node and "ports" not in node
    assert (copy / "deploy" / "incoming").stat().st_uid == 10001


def test_shipped_node_configurations_load() -> None:
    ident = load_identifiable(ROOT / "deploy" / "identifiable.yaml")
    anon = load_anonymised(ROOT / "deploy" / "anonymised.yaml")
    assert ident.forward.url.startswith("https://localhost:8443")  # through its link
    # each socket file is listened on by one side (gateway or node) and reached by the other
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    env = compose["services"]["dicom-gateway"]["environment"]["UPLOADER_RELAY_ROUTES"]
    gateway, node = parse_routes(env.split()), parse_routes(ident.links)
    assert (
        {r.listen.path for r in gateway if r.listen.path}
        == {r.target.path for r in node if r.target.path}
        == {"/links/pacs.sock", "/links/forward.sock"}
    )
    assert {r.target.path for r in gateway} & {r.listen.path for r in node} - {""} == {
        "/links/scp.sock",
        "/links/pages.sock",
    }
    # the staff pages: the gateway's port 8445 -> pages.sock -> the node's web.listen (HTTPS)
    pages = next(r for r in node if r.listen.path == "/links/pages.sock")
    assert f"{pages.target.host}:{pages.target.port}" == ident.web.listen == "127.0.0.1:8445"
    assert ident.web.tls_cert is not None and not ident.web.allow_plain_http
    assert [r.listen.port for r in gateway if r.target.path == "/links/pages.sock"] == [8445]
    local = {(r.listen.host, r.listen.port) for r in node if not r.listen.path}
    assert ("127.0.0.1", ident.pacs.port) in local and ("127.0.0.1", 8443) in local
    assert anon.intake.tls_cert is not None and not anon.intake.allow_plain_http
