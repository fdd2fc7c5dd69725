"""A private Docker engine for the Compose deployment test, started and removed by the test.

dockerd (Debian's docker.io) runs with its own socket, data root and exec root under a fresh
folder in /tmp, `--iptables=false --bridge=none`: it touches neither the host's firewall nor a
default bridge, and Compose's own networks are plain Linux bridges in namespaces it makes.
Everything it made (images, containers, networks, volumes) lives in that data root and goes
with it. No image registry is reachable here, so the base image the Dockerfile names is made
from Debian's packages (debootstrap of the same release, Python from Debian), cached as a tar
under ~/.cache between runs, and imported under the Dockerfile's FROM name.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT
from .peers import stop

DEBIAN_TOOL = "/usr/bin/docker"  # docker.io's client: builds with BuildKit without buildx
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "secure-dicom-uploader"
RELEASES = {"bookworm": "3.11"}  # Debian release -> the Python it ships


def _need(path: str) -> str:
    if not Path(path).exists():
        message = f"{path} is missing (apt-get install docker.io debootstrap; ./dev test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Engine:
    root: Path
    host: str
    proc: subprocess.Popen[Any]

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1", **extra}

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        done = subprocess.run(
            [DEBIAN_TOOL, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done.stdout


def base_image_name() -> str:
    """The image the Dockerfile builds on (its first FROM)."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            return line.split()[1]
    raise AssertionError("the Dockerfile has no FROM")


def _standin_tar(release: str) -> Path:
    """A Debian ``release`` root file system with Python, laid out like python:*-slim (cached)."""
    tar = CACHE / f"{release}-python-standin.tar"
    if tar.exists():
        return tar
    debootstrap = _need("/usr/sbin/debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sdu-rootfs-", dir=CACHE))
    rootfs = work / "rootfs"
    try:
        subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-pip", release,
             str(rootfs), "http://deb.debian.org/debian"],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        (rootfs / "usr/local/bin/pip").symlink_to("/usr/bin/pip3")
        for managed in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            managed.unlink()  # as in the official image: pip installs into the system Python
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        partial = tar.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tar


def import_base_image(engine: Engine) -> str:
    """Import the stand-in under the Dockerfile's FROM name; return that name."""
    name = base_image_name()
    match = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", name)
    assert match and RELEASES.get(match[2]) == match[1], f"no stand-in recipe for {name}"
    tar = _standin_tar(match[2])
    with tar.open("rb") as stream:
        subprocess.run(
            [DEBIAN_TOOL, "import", "--change", 'CMD ["python3"]', "-", name],
            stdin=stream, env=engine.env(), check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    return name


@contextmanager
def engine() -> Any:
    """Start a private dockerd; on exit stop it (by its process id) and remove all it made."""
    dockerd = _need("/usr/sbin/dockerd")
    _need(DEBIAN_TOOL)
    root = Path(tempfile.mkdtemp(prefix="sdu-dockerd-"))  # short: the socket path must fit
    sock = root / "docker.sock"
    log = (root / "dockerd.log").open("w")
    proc = subprocess.Popen(
        [dockerd, "--host", f"unix://{sock}", "--data-root", str(root / "data"),
         "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
         "--iptables=false", "--ip-masq=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    handle = Engine(root, f"unix://{sock}", proc)
    try:
        deadline = time.time() + 60
        while True:
            done = subprocess.run(
                [DEBIAN_TOOL, "version"], env=handle.env(), capture_output=True, check=False
            )
            if done.returncode == 0:
                break
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield handle
    finally:
        t0 = time.monotonic()
        stop(proc, grace=60)  # dockerd stops its containers and its containerd
        log.close()
        t1 = time.monotonic()
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(root)):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        # rm (C) is many times faster than shutil.rmtree on the layers; it never leaves this
        # file system, so a mount that could not be undone is not emptied through it
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)
        removed = time.monotonic() - t1
        print(f"engine stopped in {t1 - t0:.1f} s, its files removed in {removed:.1f} s")
