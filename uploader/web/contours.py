"""RT structure sets as geometry: each ROI's contours, and which image plane each lies on.

A contour belongs to a slice when its ContourImageSequence names the slice's SOP Instance UID;
a contour without that reference belongs to the slice it lies on: its distance along the
slice normal (from ImageOrientationPatient) to the slice's ImagePositionPatient is within half
the slice spacing. Points are projected into pixel columns and rows with ImageOrientationPatient
and PixelSpacing, so oblique and non-square pixels are drawn where they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

Points = npt.NDArray[np.float64]
# distinct colours for ROIs whose ROIDisplayColor is missing or unreadable
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)  # fmt: skip


@dataclass(frozen=True)
class Contour:
    """One planar contour: the images it names (may be none) and its points (N x 3, mm)."""

    images: frozenset[str]
    points: Points


@dataclass(frozen=True)
class Roi:
    """A structure: number, name (as in the file: escape it when shown), colour, contours."""

    number: int
    name: str
    color: tuple[int, int, int]
    contours: tuple[Contour, ...]


@dataclass(frozen=True)
class Plane:
    """An image slice's place in patient space."""

    sop_uid: str
    origin: Points  # ImagePositionPatient: the centre of the first pixel
    row_dir: Points  # direction of increasing column index
    col_dir: Points  # direction of increasing row index
    row_spacing: float  # PixelSpacing[0]: between rows
    col_spacing: float  # PixelSpacing[1]: between columns

    @cached_property
    def normal(self) -> Points:
        """The unit normal of the slice."""
        n = np.cross(self.row_dir, self.col_dir)
        return n / (np.linalg.norm(n) or 1.0)

    @cached_property
    def position(self) -> float:
        """The slice's position along its normal (mm)."""
        return float(np.dot(self.normal, self.origin))

    def to_pixels(self, points: Points) -> Points:
        """(column, row) pixel coordinates of patient points (N x 3) on this plane."""
        d = points - self.origin
        columns = d @ self.row_dir / self.col_spacing
        return np.stack([columns, d @ self.col_dir / self.row_spacing], 1)


def plane_of(ds: Any) -> Plane | None:
    """The plane of an image, or None when it lacks position, orientation or spacing."""
    try:
        origin = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        spacing = [float(v) for v in ds.PixelSpacing]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(origin) != 3 or len(iop) != 6 or len(spacing) != 2 or min(spacing) <= 0:
        return None
    return Plane(
        str(ds.get("SOPInstanceUID", "")),
        origin,
        np.array(iop[:3]),
        np.array(iop[3:]),
        spacing[0],
        spacing[1],
    )


def _color(item: Any, number: int) -> tuple[int, int, int]:
    try:
        r, g, b = (max(0, min(255, int(v))) for v in item.ROIDisplayColor)
    except (AttributeError, TypeError, ValueError):
        return PALETTE[number % len(PALETTE)]
    return (r, g, b)


def read_rois(ds: Any) -> list[Roi]:
    """The ROIs of an RTSTRUCT with their contours (unreadable contours are skipped)."""
    names = {
        int(item.ROINumber): str(item.get("ROIName", "") or "")
        for item in ds.get("StructureSetROISequence", [])
        if "ROINumber" in item
    }
    rois = []
    for item in ds.get("ROIContourSequence", []):
        number = int(item.get("ReferencedROINumber", 0) or 0)
        contours = []
        for c in item.get("ContourSequence", []):
            data = c.get("ContourData")
            if not data or len(data) % 3:
                continue
            images = frozenset(
                str(ref.ReferencedSOPInstanceUID)
                for ref in c.get("ContourImageSequence", [])
                if "ReferencedSOPInstanceUID" in ref
            )
            points = np.array([float(v) for v in data], dtype=np.float64).reshape(-1, 3)
            contours.append(Contour(images, points))
        name = names.get(number, f"ROI {number}")
        rois.append(Roi(number, name, _color(item, number), tuple(contours)))
    return rois


def on_plane(rois: list[Roi], plane: Plane, tolerance: float) -> list[tuple[Roi, list[Points]]]:
    """Each ROI's contours on this plane, as pixel (column, row) arrays."""
    out = []
    normal, position = plane.normal, plane.position
    for roi in rois:
        found = []
        for c in roi.contours:
            if c.images:
                hit = plane.sop_uid in c.images
            else:
                hit = abs(float(np.mean(c.points @ normal)) - position) <= tolerance
            if hit:
                found.append(plane.to_pixels(c.points))
        if found:
            out.append((roi, found))
    return out
