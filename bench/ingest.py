"""Benchmark: C-STORE ingest of a 200-slice 512x512 CT study, dcmtk storescp vs our node's SCP.

Both receive from dcmtk storescu with TCP_NODELAY (without it every file stalls ~44 ms on
loopback), in the same run. Our SCP acknowledges only durable instances (fsync + committed row).
Then the whole node: from the first C-STORE to the last instance acknowledged by the forward
target (Orthanc DICOMweb behind stunnel TLS), in instances/s.

Each round sends a new study (its own UIDs) to dcmtk storescp, then to our node; the best round
of each is compared (these machines are noisy) and every round is printed.

Usage: python bench/ingest.py [--slices 200] [--size 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import free_port, node, node_config, orthanc, stop, storescu, wait_for


def send(port: int, folder: Path, called: str) -> float:
    """Seconds storescu (TCP_NODELAY) takes to send the folder."""
    start = time.perf_counter()
    result = storescu(port, folder, calling="BENCH", called=called)
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.stderr[-500:]}")
    return time.perf_counter() - start


def _bare_pynetdicom(study: Path) -> float:
    """The same transfer to a pynetdicom SCP whose handler stores nothing (what we left)."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    from uploader.dicomnet import quiet_pynetdicom

    quiet_pynetdicom()
    ae = AE(ae_title="BARE")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 0
    handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return send(server.server_address[1], study, "BARE")
    finally:
        server.shutdown()


def _bare_ours(study: Path) -> float:
    """The same transfer to our acceptor with a store callable that keeps nothing."""
    from uploader.dicomnet.scp import ScpOptions, start_scp

    server = start_scp(ScpOptions("BARE"), "127.0.0.1", 0, lambda _received: None)
    try:
        return send(server.server_address[1], study, "BARE")
    finally:
        server.shutdown()


def _settle(study: Path) -> None:
    """Let the previous round's writes reach the disk (the node's checkpoint, Orthanc, the
    kernel's write-back), so that neither receiver pays for the other, and have the study's
    files in memory for storescu (this VM's kernel reclaims idle page cache)."""
    time.sleep(1.5)
    os.sync()
    for path in study.rglob("*"):
        if path.is_file():
            path.read_bytes()
    time.sleep(0.5)


def _studies(work: Path, rounds: int, slices: int, size: int) -> list[Path]:
    """One study per round, each its own patient and UIDs (a study sent twice would be
    recognised as duplicates and not stored again)."""
    gen = (
        "import sys; from pathlib import Path; from uploader.sample import Patient, write_study; "
        "[write_study(Path(sys.argv[1]) / f'study{r}', slices=int(sys.argv[2]), "
        "size=int(sys.argv[3]), rt=(), patient=Patient(tag=f'9{r}', patient_id=f'BENCH{r}')) "
        "for r in range(int(sys.argv[4]))]"
    )
    subprocess.run(
        [sys.executable, "-c", gen, str(work), str(slices), str(size), str(rounds)], check=True
    )
    for note in work.rglob("*.txt"):
        note.unlink()
    return [work / f"study{r}" for r in range(rounds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="studies per receiver")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        studies = _studies(work / "studies", args.rounds, args.slices, args.size)
        n = sum(1 for p in studies[0].rglob("*") if p.is_file())
        bare = min(_bare_pynetdicom(studies[0]) for _ in range(args.rounds))
        bare_ours = min(_bare_ours(studies[0]) for _ in range(args.rounds))
        port = free_port()
        (work / "scp").mkdir()
        scp = subprocess.Popen(
            ["storescp", "-aet", "STORESCP", "-od", str(work / "scp"), str(port)],
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        dcmtk: list[float] = []
        ours: list[float] = []
        whole: list[float] = []
        with orthanc(work / "repo") as repo:
            config = node_config(
                work / "node",
                repo.https,
                repo.ca,
                folder__enabled=False,
                node__default_protocol="BENCH",
                study__quiet_period_s=0.5,
                scp__journal_mb=512,  # the default
            )
            (work / "node" / "protocols" / "bench.yaml").write_text(
                "id: BENCH\nmodalities: {required: [CT]}\n"
            )
            try:
                with node(config) as our:
                    for r, study in enumerate(studies):  # the two receivers take turns
                        _settle(study)
                        dcmtk.append(send(port, study, "STORESCP"))
                        _settle(study)
                        start = time.perf_counter()
                        ours.append(send(our.scp_port, study, "UPLOADER"))
                        wait_for(
                            lambda r=r: len(repo.instances()) >= n * (r + 1),
                            600,
                            "the repository to hold the study",
                            0.2,
                        )
                        whole.append(time.perf_counter() - start)
            finally:
                stop(scp)
    print(f"study: {n} CT instances of {args.size}x{args.size}; {args.rounds} rounds, best shown")
    for r, (d, o) in enumerate(zip(dcmtk, ours, strict=True)):
        print(f"  round {r}: dcmtk {n / d:7.1f}/s  ours {n / o:7.1f}/s  ratio {d / o:.2f}")
    best_d, best_o = min(dcmtk), min(ours)
    print(f"dcmtk storescp ingest:        {n / best_d:7.1f} instances/s ({best_d:.2f} s)")
    print(f"our SCP ingest (durable):     {n / best_o:7.1f} instances/s ({best_o:.2f} s)")
    print(f"ratio ours / dcmtk:           {best_d / best_o:.2f}  (target >= 0.5)")
    print(f"our acceptor, storing nothing:                 {n / bare_ours:7.1f} instances/s")
    print(f"pynetdicom acceptor, storing nothing (replaced): {n / bare:7.1f} instances/s")
    print(
        f"whole node, first C-STORE to last instance in the repository: {n / min(whole):.1f} "
        f"instances/s ({min(whole):.2f} s, including the 0.5 s quiet period)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
