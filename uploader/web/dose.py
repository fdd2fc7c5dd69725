"""RTDOSE as isodose lines on an image slice.

The dose grid is sampled at the centre of every pixel of the slice (nearest dose voxel, the
frame nearest along the normal, within half the frame spacing), in Gy (DoseGridScaling); each
isodose level, a percentage of the grid's maximum, is drawn as the edge of the region at or
above it, in its own colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from uploader.web.contours import Plane, plane_of

#: percent of the maximum dose -> colour of its line
LEVELS: tuple[tuple[int, tuple[int, int, int]], ...] = (
    (95, (255, 64, 255)),
    (80, (255, 160, 0)),
    (50, (0, 200, 255)),
    (20, (64, 96, 255)),
)


@dataclass(frozen=True)
class DoseGrid:
    """A dose volume: its first plane, frame offsets along the normal, values in Gy."""

    plane: Plane
    offsets: npt.NDArray[np.float64]  # mm along the normal, per frame
    gy: npt.NDArray[np.float32]  # frames x rows x columns

    @property
    def maximum(self) -> float:
        """The highest dose in the grid (Gy)."""
        return float(self.gy.max()) if self.gy.size else 0.0


def read_dose(ds: Any) -> DoseGrid | None:
    """The dose grid of an RTDOSE, or None when it lacks geometry or pixels."""
    plane = plane_of(ds)
    if plane is None or "PixelData" not in ds:
        return None
    try:
        values = np.asarray(ds.pixel_array, dtype=np.float32)
        scaling = float(ds.get("DoseGridScaling", 1) or 1)
    except Exception:  # an undecodable grid: no isodose lines, the slice is still shown
        return None
    frames = values.reshape(-1, values.shape[-2], values.shape[-1])
    offsets = [float(v) for v in ds.get("GridFrameOffsetVector", [0.0] * len(frames))]
    if len(offsets) != len(frames):
        return None
    if offsets and offsets[0] != 0.0:  # relative to the first frame's ImagePositionPatient
        offsets = [o - offsets[0] for o in offsets]
    return DoseGrid(plane, np.array(offsets), frames * scaling)


def sample(
    grid: DoseGrid, slice_plane: Plane, rows: int, cols: int
) -> npt.NDArray[np.float32] | None:
    """Dose (Gy) at each pixel centre of a slice, or None when no dose frame lies on it."""
    normal = grid.plane.normal
    if abs(float(np.dot(normal, slice_plane.normal))) < 0.999:  # not parallel: not drawn
        return None
    depth = float(np.dot(slice_plane.origin - grid.plane.origin, normal))
    k = int(np.argmin(np.abs(grid.offsets - depth)))
    gap = float(np.median(np.diff(grid.offsets))) if len(grid.offsets) > 1 else 2.0
    if abs(grid.offsets[k] - depth) > abs(gap) / 2 + 1e-6:
        return None
    corner = grid.plane.to_pixels(slice_plane.origin[None, :])[0]
    step_c = (
        grid.plane.to_pixels(
            (slice_plane.origin + slice_plane.row_dir * slice_plane.col_spacing)[None, :]
        )[0]
        - corner
    )
    step_r = (
        grid.plane.to_pixels(
            (slice_plane.origin + slice_plane.col_dir * slice_plane.row_spacing)[None, :]
        )[0]
        - corner
    )
    c = corner[0] + np.arange(cols)[None, :] * step_c[0] + np.arange(rows)[:, None] * step_r[0]
    r = corner[1] + np.arange(cols)[None, :] * step_c[1] + np.arange(rows)[:, None] * step_r[1]
    ci, ri = np.rint(c).astype(np.intp), np.rint(r).astype(np.intp)
    frame = grid.gy[k]
    inside = (ci >= 0) & (ci < frame.shape[1]) & (ri >= 0) & (ri < frame.shape[0])
    out = np.zeros((rows, cols), dtype=np.float32)
    out[inside] = frame[ri[inside], ci[inside]]
    return out


def isodose_edges(
    dose: npt.NDArray[np.float32], maximum: float
) -> list[tuple[tuple[int, int, int], npt.NDArray[np.bool_]]]:
    """For each level, the pixels on the edge of the region at or above it."""
    out = []
    for percent, colour in LEVELS:
        mask = dose >= maximum * percent / 100.0
        if not mask.any() or maximum <= 0:
            continue
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        out.append((colour, mask & ~inner))
    return out
