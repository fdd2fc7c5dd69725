"""A node stops its parts in the order its correctness depends on, and a start that fails halfway
stops what it had started. The nodes run in this process with their real parts (the C-STORE SCP,
the watched folder, the links, the journal and its writer; the HTTPS intake, the pages, the push
worker); at each step of the shutdown the test checks, from outside, that what should be down
already is (a port that refuses connections, a thread that ended, a journal whose lock is free).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE

from anonymised_node.config import Config as AnonConfig
from anonymised_node.service import AnonymisedNode
from anonymised_node.service import preflight as anon_preflight
from identifiable_node.config import Config
from identifiable_node.service import IdentifiableNode, open_store, preflight
from uploader.deid.pseudonyms import generate_key
from uploader.errors import ConfigError
from uploader.store.journal import Journal

from .peers import FORWARD_KEY, free_port, wait_for


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def _alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


def _identifiable(tmp_path: Path, scp_port: int = 0) -> Config:
    generate_key(tmp_path / "site.key")
    (tmp_path / "protocols").mkdir()
    (tmp_path / "incoming").mkdir()
    return Config.model_validate({
        "node": {"data_dir": str(tmp_path / "data"), "key_file": str(tmp_path / "site.key"),
                 "protocols_dir": str(tmp_path / "protocols")},
        "folder": {"path": str(tmp_path / "incoming"), "poll_interval_s": 0.2,
                   "watch_events": False},
        "scp": {"host": "127.0.0.1", "port": scp_port, "journal_mb": 1},
        "forward": {"url": "http://127.0.0.1:9/dicom-web", "allow_plain_http": True},
        "workers": {"idle_s": 0.1},
        "links": [f"127.0.0.1:{free_port()}=127.0.0.1:9"],
    })  # fmt: skip


def test_identifiable_node_stops_receivers_then_pipeline_then_journal(tmp_path: Path) -> None:
    config = _identifiable(tmp_path)
    data = config.node.data_dir
    link_port = int(config.links[0].split("=")[0].rsplit(":", 1)[1])
    _key, trials = preflight(config, tmp_path / "node.yaml")
    seen: dict[str, list[str]] = {}  # step -> what was found down just before it

    def check(step: str) -> None:
        scp_port = node.scp.server_address[1] if node.scp else 0
        down = [
            *(["links"] if _refuses(link_port) else []),
            *(["folder"] if not node.threads["folder"].is_alive() else []),
            *(["scp"] if _refuses(scp_port) else []),
            *(["pipeline"] if not node.threads["pipeline"].is_alive() else []),
            *(["journal writer"] if not _alive("spool-writer") else []),
        ]
        if step == "health":  # the journal is closed: another process could take it now
            Journal(data / "journal", 1 << 20).close()
            down.append("journal")
        seen[step] = down

    node = IdentifiableNode(config, trials, on_stop_step=check)
    with node:
        assert (data / "node.ready").exists()
        scp_port = node.scp.server_address[1]  # type: ignore[union-attr]
        ds = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", scp_port, ae_title="UPLOADER")
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000  # in the journal, not yet in the spool?
        assoc.release()
        assert not any(_refuses(p) for p in (scp_port, link_port))
    order = ["ready file", "links", "folder", "scp", "pipeline", "journal writer", "journal",
             "health"]  # fmt: skip
    assert node.stopped == order and node.stop_failures == []
    for i, step in enumerate(order):  # everything before each step was down when it ran
        assert set(order[:i]) - {"ready file"} <= set(seen[step]), (step, seen[step])
    assert not (data / "node.ready").exists() and not (data / "health.json").exists()
    store, _spool = open_store(config)
    assert sum(store.counts().values()) == 1  # the acknowledged instance was written out


def test_a_start_that_fails_halfway_stops_what_it_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = _identifiable(tmp_path, scp_port=taken.getsockname()[1])
        _key, trials = preflight(config, tmp_path / "node.yaml")
        node = IdentifiableNode(config, trials)
        with pytest.raises(OSError), node:
            pytest.fail("the SCP's port is taken: the node must not start")
    assert node.stopped == ["pipeline", "journal writer", "journal", "health"]
    assert not _alive("pipeline") and not _alive("spool-writer")
    Journal(config.node.data_dir / "journal", 1 << 20).close()  # its lock was released
    assert not (config.node.data_dir / "node.ready").exists()


def _anonymised(tmp_path: Path, **web: object) -> tuple[AnonConfig, Path]:
    (tmp_path / "token").write_text("intake-token-123\n")
    (tmp_path / "forward.key").write_text(FORWARD_KEY)
    (tmp_path / "protocols").mkdir()
    config = AnonConfig.model_validate({
        "node": {"data_dir": str(tmp_path / "data"), "protocols_dir": str(tmp_path / "protocols")},
        "intake": {"host": "127.0.0.1", "port": free_port(), "allow_plain_http": True,
                   "token_file": str(tmp_path / "token"),
                   "forward_key_file": str(tmp_path / "forward.key")},
        "targets": {"local": {"type": "directory", "path": str(tmp_path / "out")}},
        "workers": {"idle_s": 0.1},
        "web": web,
    })  # fmt: skip
    return config, tmp_path / "anon.yaml"


def test_anonymised_node_stops_intake_then_pages_then_push_worker(tmp_path: Path) -> None:
    pages_port = free_port()
    config, path = _anonymised(tmp_path, listen=f"127.0.0.1:{pages_port}", allow_plain_http=True)
    protocols, token, review = anon_preflight(config, path)
    seen: dict[str, list[str]] = {}

    def check(step: str) -> None:
        seen[step] = [
            *(["intake"] if _refuses(config.intake.port) else []),
            *(["pages"] if _refuses(pages_port) else []),
            *(["push worker"] if node.worker and not node.worker.is_alive() else []),
        ]

    node = AnonymisedNode(config, protocols, token, review, on_stop_step=check)
    with node:
        wait_for((config.node.data_dir / "node.ready").exists, 20, "the node to be ready")
        assert not _refuses(config.intake.port) and not _refuses(pages_port)
    order = ["ready file", "intake", "pages", "push worker", "health"]
    assert node.stopped == order and not node.failed and node.stop_failures == []
    for i, step in enumerate(order):
        assert set(order[:i]) - {"ready file"} <= set(seen[step]), (step, seen[step])
    assert not (config.node.data_dir / "node.ready").exists()


def test_anonymised_node_that_cannot_serve_its_pages_stops_its_worker(tmp_path: Path) -> None:
    config, path = _anonymised(tmp_path, listen=f"127.0.0.1:{free_port()}")  # HTTPS, no cert
    protocols, token, review = anon_preflight(config, path)
    node = AnonymisedNode(config, protocols, token, review)
    with pytest.raises(ConfigError, match=r"web\.listen"), node:
        pytest.fail("the pages have no certificate: the node must not start")
    assert node.stopped == ["push worker", "health"]
    assert not _alive("push") and not (config.node.data_dir / "node.ready").exists()
