"""A bulk CSV retrieval survives a restart of the identifiable node.

A real Orthanc acts as the PACS, behind a small TCP gate the test controls (the node's C-FIND and
C-MOVE associations pass through it; Orthanc's C-STOREs go straight to the node). Staff upload a
three-row CSV on the bulk page; the gate lets the first row's two associations through and then
holds every new one, so the node is stopped (SIGTERM) with the second row's association waiting
for an answer that never comes: it exits at once and cleanly (the association is cut, the row
stays pending). After the restart the rows already done stay done and are not asked again
(the gate counts the associations), the unfinished rows are taken up at start and complete, and
the job's page shows each row's final outcome.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from identifiable_node.store import BulkStatus, Store
from uploader.sample import Patient, write_study
from uploader.web.accounts import Accounts, Role

from .peers import free_port, make_cert, node, node_config, orthanc, stop, wait_for
from .webnode import PASSWORDS, csrf_of

pytestmark = pytest.mark.integration
ROIS = ["Prostate", "Rectum", "Bladder", "PTV_1"]
IN_PACS = [
    Patient(name="FOX^FREYA", patient_id="9434765966", accession="ACC0066", tag="6"),
    Patient(name="GRAY^GIDEON", patient_id="9434765977", accession="ACC0077", tag="7"),
    Patient(name="HILL^HANNA", patient_id="9434765988", accession="ACC0088", tag="8"),
]
PER_STUDY = 5  # CT x2, RTSTRUCT, RTPLAN, RTDOSE


class Gate:
    """A TCP relay to Orthanc's DICOM port that passes ``allow`` connections, then holds the rest
    (accepted, never answered) until opened; it counts the connections it passed."""

    def __init__(self, upstream: int, allow: int) -> None:
        self.upstream, self.allow, self.passed = upstream, allow, 0
        self.held: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        with self._lock:
            self.allow, self.passed = 1_000_000, 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.passed >= self.allow:
                    self.held.append(client)
                    continue
                self.passed += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            s.close()


def _quietly(call: object) -> None:
    with contextlib.suppress(requests.RequestException):
        call()  # type: ignore[operator]


def _client(web: str, ca: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # else the environment's CA bundle wins over verify
    s.verify = str(ca)

    def signin_page() -> str:  # the pages start just after the node says it is ready
        try:
            return s.get(f"{web}/signin", timeout=10).text
        except requests.ConnectionError:
            return ""

    csrf = csrf_of(wait_for(signin_page, 20, "the sign-in page"))
    done = s.post(
        f"{web}/signin",
        data={"csrf": csrf, "name": "rita", "password": PASSWORDS["rita"]},
        timeout=30,
    )
    assert "Sign out" in done.text
    return s


def _page_rows(s: requests.Session, url: str) -> list[tuple[str, str, str]]:
    html = s.get(url, timeout=10).text
    return re.findall(
        r'<tr class="bulk-row" data-line="(\d+)" data-status="([^"]+)">.*?'
        r'<td class="arrived">(\d+)</td>',
        html,
        flags=re.S,
    )


@pytest.fixture
def config(tmp_path: Path) -> Iterator[tuple[Path, Gate]]:
    scp_port, web_port = free_port(), free_port()
    modality = {
        "uploader": {
            "AET": "UPLOADER", "Host": "127.0.0.1", "Port": scp_port,
            "AllowFind": True, "AllowMove": True, "AllowStore": True,
        }
    }  # fmt: skip
    with orthanc(tmp_path / "pacs", modalities=modality, aet="PACS") as pacs:
        for i, patient in enumerate(IN_PACS):
            for f in write_study(tmp_path / f"pacs{i}", slices=2, rois=ROIS, patient=patient):
                assert requests.post(f"{pacs.http}/instances", data=f.read_bytes(), timeout=10)
        gate = Gate(pacs.dicom_port, allow=2)  # the first row: its C-FIND and its C-MOVE
        cert = make_cert(tmp_path, "pages")
        path = node_config(
            tmp_path / "ident",
            f"https://127.0.0.1:{free_port()}/dicom-web",  # nothing forwarded: no trial given
            cert,
            node__default_protocol=None,
            scp__port=scp_port,
            pacs__ae_title="PACS",
            pacs__host="127.0.0.1",
            pacs__port=gate.port,
            pacs__concurrency=1,
        )
        settings = yaml.safe_load(path.read_text())
        settings["web"] = {
            "listen": f"127.0.0.1:{web_port}",
            "tls_cert": str(cert),
            "tls_key": str(tmp_path / "pages.key"),
        }
        path.write_text(yaml.safe_dump(settings))
        accounts = Accounts(Path(settings["node"]["data_dir"]) / "node.sqlite")
        accounts.add("rita", Role.REVIEWER, PASSWORDS["rita"])
        try:
            yield path, gate
        finally:
            gate.close()


def test_bulk_job_interrupted_by_sigterm_resumes_at_start_and_completes(
    config: tuple[Path, Gate],
) -> None:
    path, gate = config
    settings = yaml.safe_load(path.read_text())
    web = f"https://{settings['web']['listen']}"
    ca = Path(settings["web"]["tls_cert"])
    db = Path(settings["node"]["data_dir"]) / "node.sqlite"
    text = "Accession Number,Patient ID,Study Date\n" + "".join(
        f"{p.accession},,\n" for p in IN_PACS
    )
    with node(path) as first:
        s = _client(web, ca)
        form = s.get(f"{web}/bulk", timeout=10)
        job_page = s.post(f"{web}/bulk", data={"csrf": csrf_of(form.text), "csv": text}, timeout=30)
        assert job_page.status_code == 200 and "/bulk/" in job_page.url
        url = job_page.url
        job = url.rsplit("/", 1)[1]
        wait_for(
            lambda: gate.held and _page_rows(s, url)[0][1] == "done",
            60,
            "the first row done and the second one's association held by the gate",
        )
        # and a query from the page, held too
        held = len(gate.held)
        asking = threading.Thread(
            target=lambda: _quietly(lambda: s.get(f"{web}/qr?accession=ACC0099", timeout=30)),
            daemon=True,
        )
        asking.start()
        wait_for(lambda: len(gate.held) > held, 20, "the page's C-FIND held by the gate")
        # SIGTERM with a retrieval and a query in flight: pynetdicom would wait up to 60 s for
        # the PACS's answer; the node cuts both associations and exits cleanly, well within
        # the engine's grace period (Compose's default 10 s, after which it kills)
        started = time.monotonic()
        assert stop(first.proc, grace=8) == 0, "the node was killed or failed to stop cleanly"
        took = time.monotonic() - started
        assert took < 8, f"stopping took {took:.1f} s"
    store = Store(db)
    before = store.bulk_rows(job)
    assert [(r.line, r.status, r.arrived) for r in before] == [
        (2, BulkStatus.DONE, PER_STUDY),
        (3, BulkStatus.PENDING, 0),
        (4, BulkStatus.PENDING, 0),
    ]
    gate.open()
    with node(path):  # the same node, started again: it takes the job up by itself
        s = _client(web, ca)
        rows = wait_for(
            lambda: (r := _page_rows(s, url)) and all(st != "pending" for _l, st, _a in r) and r,
            60,
            "every row of the resumed job finished (the page)",
        )
        assert rows == [("2", "done", "5"), ("3", "done", "5"), ("4", "done", "5")]
        assert gate.passed == 4  # rows 3 and 4 (C-FIND + C-MOVE each); row 2 not asked again
        after = store.bulk_rows(job)
        assert [(r.line, r.status, r.matched, r.arrived, r.failed) for r in after] == [
            (line, BulkStatus.DONE, 1, PER_STUDY, 0) for line in (2, 3, 4)
        ]
        patients = {st.patient_id for st in store.studies()}
        assert patients == {p.patient_id for p in IN_PACS}
        assert sum(len(store.instances(st.id)) for st in store.studies()) == 3 * PER_STUDY
