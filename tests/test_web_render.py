"""The server-side renderer: RT contours are drawn on the CT slices they belong to, in their
ROI's colour (by ContourImageSequence, else by position along the slice normal); windows;
compressed pixel data pydicom decodes is shown, the rest says why not."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, RLELossless

from uploader.sample import write_study
from uploader.web.contours import plane_of, read_rois
from uploader.web.render import (
    NotRenderable,
    RenderCache,
    render_slice,
    sort_slices,
    thumbnail,
    window,
)

GREEN, BLUE = (0, 255, 0), (0, 0, 255)


def _square(x0: float, y0: float, side: float, z: float) -> list[float]:
    corners = [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]
    return [v for x, y in corners for v in (x, y, z)]


def _contour(data: list[float], image: Dataset | None) -> Dataset:
    c = Dataset()
    c.ContourGeometricType = "CLOSED_PLANAR"
    c.NumberOfContourPoints = len(data) // 3
    c.ContourData = data
    if image is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        c.ContourImageSequence = Sequence([ref])
    return c


def _study(tmp_path: Path) -> tuple[list[Dataset], Dataset]:
    """Four 64x64 CT slices from the sample generator and an RTSTRUCT with two squares: one
    referencing slice 1 by UID, one on slice 2 with no image reference (position only)."""
    files = write_study(tmp_path / "s", slices=4, size=64, rt=("RTSTRUCT",))
    cts = [dcmread(f) for f in files if "CT" in f.parts]
    ramp = (np.add.outer(np.arange(64), np.arange(64)) * 16 + 600).astype(np.uint16)  # 12 bits
    for ct in cts:
        ct.PixelData = ramp.tobytes()
    struct = dcmread(next(f for f in files if f.name == "RS.dcm"))
    names = Sequence()
    contours = Sequence()
    for number, (name, colour, contour) in enumerate(
        [
            (
                "Linked",
                GREEN,
                _contour(_square(-100, -100, 100, cts[1].ImagePositionPatient[2]), cts[1]),
            ),
            (
                "Unlinked",
                BLUE,
                _contour(_square(50, 50, 100, cts[2].ImagePositionPatient[2]), None),
            ),
        ],
        start=1,
    ):
        item = Dataset()
        item.ROINumber, item.ROIName = number, name
        names.append(item)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = number, list(colour)
        rc.ContourSequence = Sequence([contour])
        contours.append(rc)
    struct.StructureSetROISequence, struct.ROIContourSequence = names, contours
    return cts, struct


def _rgb(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def _has(arr: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(arr == np.array(colour, dtype=np.uint8), axis=-1)


def test_contours_are_drawn_on_their_own_slices_in_their_colours(tmp_path: Path) -> None:
    cts, struct = _study(tmp_path)
    rois = read_rois(struct)
    assert [(r.name, r.color) for r in rois] == [("Linked", GREEN), ("Unlinked", BLUE)]
    slices = sort_slices(cts)
    drawn = [_rgb(render_slice(s, "soft", rois)) for s in slices]
    assert drawn[1].shape == (512, 512, 3)  # 64 px shown 8x: contours stay visible
    green = [_has(a, GREEN) for a in drawn]
    blue = [_has(a, BLUE) for a in drawn]
    assert [int(g.sum() > 0) for g in green] == [0, 1, 0, 0]  # linked by ContourImageSequence
    assert [int(b.sum() > 0) for b in blue] == [0, 0, 1, 0]  # placed by position on the normal
    # where: x from -100 to 0 mm on a 500 mm field starting at -250 -> columns 19.2..32 (x8)
    ys, xs = np.nonzero(green[1])
    assert 150 <= xs.min() <= 162 and 254 <= xs.max() <= 266
    assert 150 <= ys.min() <= 162 and 254 <= ys.max() <= 266
    inside = drawn[1][210, 210]
    assert not _has(inside[None, None], GREEN).any()  # an outline, not a filled block
    ys, xs = np.nonzero(blue[2])
    assert 305 <= xs.min() <= 316 and 305 <= ys.min() <= 316  # 50 mm -> column 38.4 (x8)


def test_contours_follow_the_slice_geometry_not_the_pixel_grid(tmp_path: Path) -> None:
    """Non-square pixels and a shifted origin move the drawing with them."""
    cts, struct = _study(tmp_path)
    for ct in cts:
        ct.PixelSpacing = [500 / 64, 250 / 64]  # rows 7.8 mm apart, columns 3.9 mm
        ct.ImagePositionPatient = [-125.0, -250.0, ct.ImagePositionPatient[2]]
    slices = sort_slices(cts)
    arr = _rgb(render_slice(slices[1], "soft", read_rois(struct)))
    ys, xs = np.nonzero(_has(arr, GREEN))
    # x = -100 -> column (-100 + 125) / 3.906 = 6.4 -> pixel ~ (6.4 + .5) * 8 = 55
    assert 50 <= xs.min() <= 60
    plane = plane_of(cts[1])
    assert plane is not None
    assert plane.to_pixels(np.array([[-100.0, -250.0, 0.0]]))[0].tolist() == [6.4, 0.0]
    assert 254 <= ys.max() <= 266


def test_window_presets_and_monochrome1() -> None:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    hu = np.array([[-1000.0, -600.0, 40.0, 1000.0]], dtype=np.float32)
    assert window(hu, "soft", ds).tolist() == [[0, 0, 127, 255]]
    assert window(hu, "lung", ds)[0, 1] == 127
    assert window(hu, "bone", ds)[0, 0] == 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert window(hu, "soft", ds).tolist() == [[255, 255, 128, 0]]


def test_rle_compressed_slice_renders_like_the_uncompressed_one(tmp_path: Path) -> None:
    cts, struct = _study(tmp_path)
    plain = render_slice(sort_slices(cts)[1], "soft", read_rois(struct))
    squeezed = copy.deepcopy(cts[1])
    squeezed.compress(RLELossless, generate_instance_uid=False)
    assert squeezed.file_meta.TransferSyntaxUID == RLELossless
    again = render_slice(sort_slices([cts[0], squeezed, cts[2]])[1], "soft", read_rois(struct))
    assert np.array_equal(_rgb(plain), _rgb(again))


def test_undecodable_pixel_data_says_why(tmp_path: Path) -> None:
    cts, _struct = _study(tmp_path)
    broken = cts[0]
    broken.file_meta.TransferSyntaxUID = JPEG2000Lossless
    broken.PixelData = b"\xff\x4f" + b"\x00" * 30
    with pytest.raises(NotRenderable, match="JPEG 2000"):
        thumbnail(broken)
    del broken.PixelData
    with pytest.raises(NotRenderable, match="no pixel data"):
        thumbnail(broken)


def test_render_cache_keeps_a_bounded_number_of_bytes() -> None:
    cache = RenderCache(limit_bytes=10)
    made: list[str] = []

    def make(name: str) -> bytes:
        made.append(name)
        return name.encode() * 4

    assert cache.get(("a",), lambda: make("a")) == b"aaaa"
    assert cache.get(("a",), lambda: make("a")) == b"aaaa"
    cache.get(("b",), lambda: make("b"))
    cache.get(("c",), lambda: make("c"))  # 12 bytes > 10: "a" goes
    cache.get(("a",), lambda: make("a"))
    assert made == ["a", "b", "c", "a"] and cache.hits == 1


def _dose(z: float) -> Dataset:
    """An RTDOSE grid: 40x40 voxels of 5 mm from (-100, -100), two frames from z, a Gaussian
    of 60 Gy peak centred on (0, 0)."""
    ds = Dataset()
    ds.Modality = "RTDOSE"
    ds.ImagePositionPatient = [-100.0, -100.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [5.0, 5.0]
    ds.Rows = ds.Columns = 40
    ds.NumberOfFrames = 2
    ds.GridFrameOffsetVector = [0.0, 2.5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseGridScaling = 0.001
    x = -100 + 5 * np.arange(40)
    gy = 60 * np.exp(-(x[None, :] ** 2 + x[:, None] ** 2) / (2 * 30.0**2))
    frames = np.stack([gy, gy]) / 0.001
    ds.PixelData = frames.astype(np.uint32).tobytes()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_isodose_lines_are_drawn_where_the_dose_grid_covers_the_slice(tmp_path: Path) -> None:
    from uploader.web.dose import LEVELS, read_dose

    cts, _struct = _study(tmp_path)
    grid = read_dose(_dose(float(cts[1].ImagePositionPatient[2])))
    assert grid is not None and abs(grid.maximum - 60) < 0.1
    slices = sort_slices(cts)
    drawn = [_rgb(render_slice(s, "soft", [], grid)) for s in slices]
    high, low = LEVELS[0][1], LEVELS[-1][1]
    assert [int(_has(a, high).any()) for a in drawn] == [0, 1, 1, 0]  # frames on slices 1, 2
    ys, xs = np.nonzero(_has(drawn[1], high))
    # 95 % of a 30 mm Gaussian: a ring of ~10 mm around (0, 0) -> pixel (32 + 0.5) * 8 = 260
    assert abs(xs.mean() - 260) < 8 and abs(ys.mean() - 260) < 8
    assert np.hypot(xs - 260, ys - 260).max() < 24
    ys, xs = np.nonzero(_has(drawn[1], low))
    # 20 %: a wider ring at ~54 mm = 55 px, give or take a CT pixel (8 px) and a dose voxel
    ring = np.hypot(xs - 260, ys - 260)
    assert ring.min() > 36 and ring.max() < 72
