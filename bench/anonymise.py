"""Benchmark: `uploader anonymise` against a plain pydicom read+write and dicognito, same run.

Input: a generated 200-slice 512x512 CT series with an RTSTRUCT (about 41,000 contour numbers),
RTPLAN and RTDOSE. Every tool runs as its own process, start-up included, on the same files;
each is run --repeat times and the best time kept. Prints files/s, the ratio of ours to the
plain read+write (the practical ceiling; target >= 0.6) and to dicognito (target >= 1.5), and
our peak RSS (target < 300 MB).

Usage: python bench/anonymise.py [--slices 200] [--size 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = """
import sys, os
from pathlib import Path
from pydicom import dcmread
src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
n = 0
for folder, _dirs, files in os.walk(src):
    for name in files:
        p = Path(folder) / name
        try:
            ds = dcmread(p)
        except Exception:
            continue
        n += 1
        ds.save_as(out / f"{n}.dcm")
"""


def run(cmd: list[str]) -> tuple[float, int]:
    """Run a command; return (seconds, peak RSS in MB). Raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return elapsed, usage.ru_maxrss // 1024


def best(cmd_for: callable, repeat: int, work: Path) -> tuple[float, int]:  # type: ignore[valid-type]
    times, rss = [], 0
    for i in range(repeat):
        out = work / f"out{i}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, peak = run(cmd_for(out))
        times.append(seconds)
        rss = max(rss, peak)
    return min(times), rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="skip dicognito")
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="bench-anon-") as tmp:
        work = Path(tmp)
        src = work / "in"
        # generated in a child process: a fork of a big parent would inflate children's peak RSS
        gen = (
            "import sys; from pathlib import Path; from uploader.sample import write_study; "
            "write_study(Path(sys.argv[1]), slices=int(sys.argv[2]), size=int(sys.argv[3]), "
            "points=17)"
        )
        subprocess.run(
            [sys.executable, "-c", gen, str(src), str(args.slices), str(args.size)], check=True
        )
        files = [p for p in src.rglob("*") if p.is_file() and p.suffix != ".txt"]
        n = len(files)
        rs = next(f for f in files if f.name == "RS.dcm")
        print(
            f"input: {n} DICOM files, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB; "
            f"RTSTRUCT {rs.stat().st_size / 1e6:.2f} MB"
        )
        key = work / "site.key"
        key.write_text("00" * 32)
        results: dict[str, tuple[float, int]] = {}
        results["plain pydicom read+write"] = best(
            lambda o: [sys.executable, "-c", PLAIN, str(src), str(o)], args.repeat, work
        )
        results["uploader anonymise"] = best(
            lambda o: [
                str(bindir / "uploader"),
                "anonymise",
                str(src),
                str(o),
                "--key-file",
                str(key),
                "--json",
            ],
            args.repeat,
            work,
        )
        if not args.no_peers:
            results["dicognito 0.19"] = best(
                lambda o: [sys.executable, "-m", "dicognito", "--quiet", "-o", str(o), str(src)],
                args.repeat,
                work,
            )
    for name, (seconds, rss) in results.items():
        print(f"{name:28s} {n / seconds:7.1f} files/s  ({seconds:.2f} s, peak RSS {rss} MB)")
    ours = n / results["uploader anonymise"][0]
    plain = n / results["plain pydicom read+write"][0]
    print(f"ratio uploader / plain read+write: {ours / plain:.2f}  (target >= 0.6)")
    if "dicognito 0.19" in results:
        print(
            f"ratio uploader / dicognito:        {ours / (n / results['dicognito 0.19'][0]):.2f}"
            "  (target >= 1.5)"
        )
    print(f"uploader peak RSS: {results['uploader anonymise'][1]} MB  (target < 300)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
