"""Benchmark: one 512x512 CT slice with 10 structures drawn, as the study page asks for it.

(a) the floor: pydicom reading the file and decoding its pixels (``dcmread(...).pixel_array``);
(b) ours: read, decode, window, draw the 10 ROIs' contours, encode the PNG (cache bypassed).
Same file, same run, best of several rounds; the goal is (b) under 3x (a).

Usage: python bench/render.py [--rounds 7] [--repeat 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom import dcmread

from uploader.sample import write_study
from uploader.web.contours import read_rois
from uploader.web.render import Slice, render_slice, sort_slices


def best_ms(jobs: list[Callable[[], object]], rounds: int, repeat: int) -> list[float]:
    """Best time per call of each job (ms), rounds interleaved so that noise hits all alike."""
    best = [float("inf")] * len(jobs)
    for _ in range(rounds):
        for k, job in enumerate(jobs):
            start = time.perf_counter()
            for _ in range(repeat):
                job()
            best[k] = min(best[k], (time.perf_counter() - start) / repeat)
    return [b * 1000 for b in best]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rois = [f"Structure_{i}" for i in range(10)]
        files = write_study(Path(tmp), slices=3, size=512, rois=rois, points=200, rt=("RTSTRUCT",))
        cts = [f for f in files if "CT" in f.parts]
        struct = read_rois(dcmread(next(f for f in files if f.name == "RS.dcm")))
        middle = sort_slices([dcmread(f, stop_before_pixels=True) for f in cts])[1]
        path = next(f for f in cts if dcmread(f).SOPInstanceUID == middle.ds.SOPInstanceUID)

        def floor() -> object:
            return dcmread(path).pixel_array

        def ours() -> object:
            return render_slice(Slice(dcmread(path), middle.plane, middle.spacing), "soft", struct)

        drawn = sum(len(r.contours) for r in struct)
        print(f"one 512x512 CT slice, {len(struct)} structures ({drawn} contours in the set)")
        f, o = best_ms([floor, ours], args.rounds, args.repeat)
        print(f"pydicom read + pixel decode (floor): {f:6.2f} ms")
        print(f"our PNG with contours:               {o:6.2f} ms")
        print(f"ratio ours / floor: {o / f:.2f}  (goal < 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
