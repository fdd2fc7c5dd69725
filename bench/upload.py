"""Benchmark: pushing a 200-slice 512x512 CT study to Orthanc's STOW-RS over HTTPS.

(a) the baseline: a plain batched ``requests`` POST, 20 instances a request;
(b) our push worker (anonymised_node.push), including its QIDO-RS arrival check.
Same files, same Orthanc (behind stunnel TLS), same run; the target is (b) >= 0.8 of (a).

Usage: python bench/upload.py [--slices 200] [--size 512]
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import orthanc


def plain(url: str, ca: Path, files: list[Path]) -> float:
    start = time.perf_counter()
    for i in range(0, len(files), 20):
        boundary = "b" + secrets.token_hex(8)
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + f.read_bytes()
                + b"\r\n"
                for f in files[i : i + 20]
            )
            + f"--{boundary}--\r\n".encode()
        )
        r = requests.post(
            f"{url}/studies",
            data=body,
            verify=str(ca),
            timeout=300,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
        )
        r.raise_for_status()
    return time.perf_counter() - start


def ours(url: str, ca: Path, files: list[Path], work: Path) -> float:
    from pydicom import dcmread

    from anonymised_node.config import Config
    from anonymised_node.push import Pusher
    from anonymised_node.store import AnonState, AnonStore

    store = AnonStore(work / "bench.sqlite")
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        store.add_instance(
            study_uid=str(ds.StudyInstanceUID),
            sop_uid=str(ds.SOPInstanceUID),
            sop_class=str(ds.SOPClassUID),
            path=str(f),
            protocol="BENCH",
            subject="S",
            session="T",
        )
    study = store.studies()[0]
    store.set_state(study.id, AnonState.APPROVED, "bench")
    config = Config.model_validate(
        {
            "targets": {"repo": {"type": "dicomweb", "url": url, "ca_bundle": str(ca)}},
            "default_target": "repo",
        }
    )
    pusher = Pusher(config, store, {})
    start = time.perf_counter()
    pusher.step()
    elapsed = time.perf_counter() - start
    state = store.study(study.id)
    if state is None or state.state != "uploaded":
        raise SystemExit(f"our push did not finish: {state}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        work = Path(tmp)
        gen = (
            "import sys; from pathlib import Path; from uploader.sample import write_study; "
            "write_study(Path(sys.argv[1]), slices=int(sys.argv[2]), size=int(sys.argv[3]), rt=())"
        )
        subprocess.run(
            [sys.executable, "-c", gen, str(work / "s"), str(args.slices), str(args.size)],
            check=True,
        )
        files = sorted(p for p in (work / "s").rglob("IM*"))
        with orthanc(work / "a") as first:
            base = plain(first.https, first.ca, files)
        with orthanc(work / "b") as second:
            mine = ours(second.https, second.ca, files, work)
    n = len(files)
    print(f"study: {n} CT instances of {args.size}x{args.size}, to Orthanc STOW-RS over HTTPS")
    print(f"plain batched requests POST (20/request): {n / base:6.1f} instances/s ({base:.2f} s)")
    print(
        f"our push worker, with QIDO-RS arrival check: {n / mine:6.1f} instances/s ({mine:.2f} s)"
    )
    print(f"ratio ours / plain: {base / mine:.2f}  (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
