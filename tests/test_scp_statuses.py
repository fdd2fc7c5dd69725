"""Our C-STORE SCP answers with the status that fits, to real dcmtk storescu: Success only once
the store callable returned (the instance durable), Out of Resources when storage fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.dicomnet import quiet_pynetdicom
from uploader.dicomnet.scp import Received, make_ae, start_scp
from uploader.sample import write_study

from .peers import storescu

pytestmark = pytest.mark.integration


def test_success_only_after_store_and_out_of_resources_on_disk_failure(tmp_path: Path) -> None:
    quiet_pynetdicom()
    study = tmp_path / "study"
    write_study(study, slices=2, rt=())
    for note in study.rglob("*.txt"):
        note.unlink()
    kept: list[bytes] = []

    def ok(received: Received) -> None:
        kept.append(received.data)

    def disk_full(_received: Received) -> None:
        raise OSError(28, "No space left on device")

    server = start_scp(make_ae("UPLOADER", [], 2), "127.0.0.1", 0, ok)
    try:
        sent = storescu(server.server_address[1], study)
        assert sent.returncode == 0, sent.stderr
        assert len(kept) == 2 and all(d[128:132] == b"DICM" for d in kept)
    finally:
        server.shutdown()
    server = start_scp(make_ae("UPLOADER", [], 2), "127.0.0.1", 0, disk_full)
    try:
        import subprocess

        from .conftest import integration_tool

        refused = subprocess.run(
            [
                integration_tool("storescu"),
                "-v",
                "-aec",
                "UPLOADER",
                "+sd",
                "+r",
                "-nh",
                "127.0.0.1",
                str(server.server_address[1]),
                str(study),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out = refused.stdout + refused.stderr
        assert out.count("Refused: OutOfResources") == 2, out
    finally:
        server.shutdown()
